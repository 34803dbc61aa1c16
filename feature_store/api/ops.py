"""Probes for process managers and load balancers: liveness and readiness (public, like the
OpenAPI document: a probe carries no API key)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g
from prometheus_client import CONTENT_TYPE_LATEST

from feature_store import metrics
from feature_store.api.errors import json_response
from feature_store.errors import FeatureStoreError
from feature_store.streaming import status as stream_status

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health():
    """Liveness: the web process serves (touches nothing)."""
    return json_response({"status": "ok"})


@bp.get("/ready")
def ready():
    """Readiness: Redis and the warehouse answer; how many workers listen on the extraction queue."""
    # The streaming process's slot is reported, not checked: values are served while it lags.
    services = current_app.extensions["feature_store"]
    checks: dict[str, str] = {}
    try:
        services.store.ping()
        checks["redis"] = "ok"
    except FeatureStoreError as exc:
        checks["redis"] = str(exc)
    try:
        services.warehouse.ping()
        checks["warehouse"] = "ok"
    except FeatureStoreError as exc:
        checks["warehouse"] = str(exc)
    workers = None
    if checks["redis"] == "ok":
        try:
            workers = services.runs.listening_workers()
        except FeatureStoreError:
            pass
    stream = None
    if not services.config.embedded and checks["redis"] == "ok":
        stream = stream_status.report(services.store.redis, services.warehouse if checks["warehouse"] == "ok"
                                      else None, services.config.STREAM_SLOT)
    body = {"status": "ready", "checks": checks, "workers": workers, "queue": services.config.EXTRACT_QUEUE,
            "embedded": services.config.embedded, "stream": stream}
    failing = [name for name, outcome in checks.items() if outcome != "ok"]
    if not failing:
        return json_response(body)
    body.update(status="not ready", success=False,
                error="not ready: " + "; ".join(f"{name}: {checks[name]}" for name in failing),
                request_id=g.get("request_id"))
    return json_response(body, 503)


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus metrics of every web process together, and of the store."""
    return Response(metrics.render(current_app.extensions["feature_store"]), content_type=CONTENT_TYPE_LATEST)
