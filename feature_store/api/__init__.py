"""The HTTP API: one blueprint under /api/v1/features. Views are thin: parse, call a service,
shape the answer."""

from __future__ import annotations

import re
from datetime import datetime

import orjson
from flask import Blueprint, current_app, g, request, url_for
from marshmallow import ValidationError
from werkzeug.exceptions import ClientDisconnected

from feature_store.api.bodies import (
    body_deadline,
    lookup_answer,
    parse_json,
    serve_feature_set,
    simple_as_of_item,
    simple_item,
)
from feature_store.api.errors import ApiError, json_response
from feature_store.api.schemas import (
    ExtractRequestSchema,
    FeatureRequestSchema,
    FeatureSetRequestSchema,
    TrainingRequestSchema,
    first_error,
)
from feature_store.online_store import now_seconds
from feature_store.services import discovery
from feature_store.services import parity as parity_check

bp = Blueprint("features", __name__, url_prefix="/api/v1/features")

_feature_request = FeatureRequestSchema()
_training_request = TrainingRequestSchema()
_extract_request_schema = ExtractRequestSchema()
_feature_set_request = FeatureSetRequestSchema()
RUNS_LISTED_MAX = 100


def _services():
    return current_app.extensions["feature_store"]


_BODY_TIMEOUT = "the request body did not arrive in time"
NOT_JSON = "the request body is not valid JSON (expected a JSON object)"
EMPTY_BODY = "the request body is empty (expected a JSON object)"
# Stated without a number, as there is no fixed one: Python's json gives up where the interpreter's
# recursion limit does (about 980 levels in a view, fewer on a deeper stack; orjson at 1024). A
# request of the documented shape nests 3 levels.
TOO_DEEP = "the request body is nested too deeply to parse (expected a JSON object)"


def _request_data() -> bytes:
    """The request body, read within REQUEST_BODY_TIMEOUT (else 408). A body without
    Content-Length (chunked) is read up to the size limit; if more follows, it is refused like a
    too-large one (Werkzeug would cut it off silently)."""
    if request.environ.get("feature_store.body_timed_out"):
        raise ApiError(408, _BODY_TIMEOUT)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    try:
        with body_deadline(request.environ, _services().config.REQUEST_BODY_TIMEOUT):
            data = request.get_data(cache=False)
            too_large = (request.content_length is None and limit is not None and len(data) >= limit
                         and request.environ["wsgi.input"].read(1))
    except OSError:  # TimeoutError: the client stopped sending the body it declared
        raise ApiError(408, _BODY_TIMEOUT) from None
    except ClientDisconnected as exc:  # Werkzeug's word for the same, when it wraps the stream
        if isinstance(exc.__context__, TimeoutError):
            raise ApiError(408, _BODY_TIMEOUT) from None
        raise
    if too_large:
        raise ApiError(413, "request body too large")
    return data


def _parsed(data: bytes):
    """`data` parsed as JSON, exactly (integers stay integers of any size); else a 400 saying what
    is wrong: an empty body, one nested too deeply to parse, or one that is not JSON."""
    try:
        return parse_json(data)
    except RecursionError:
        raise ApiError(400, TOO_DEEP) from None
    except ValueError:
        if not data.strip(b" \t\r\n"):  # JSON's whitespace
            raise ApiError(400, EMPTY_BODY) from None
        raise ApiError(400, NOT_JSON) from None


def _json_body():
    """The request body parsed as JSON, exactly (see _parsed)."""
    return _parsed(_request_data())


def _load(schema, body):
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise ApiError(400, first_error(exc.messages)) from None


def _item(body) -> tuple[str, str] | tuple[str, str, datetime | None]:
    """(feature_type, entity_id[, as_of]) of one request item: the common shape directly,
    anything else through the schema, which accepts exactly the same items and words the error
    for the rest."""
    item = simple_item(body)
    if item is not None:
        return item
    loaded = _load(_feature_request, body)
    return loaded["feature_type"], loaded["entity_id"], loaded.get("as_of")


def _simple_items(body) -> list[tuple[str, str]] | None:
    """The items of a training request when every one is in the common shape, else None."""
    if type(body) is dict and type(body.get("features")) is list:
        items = []
        for raw in body["features"]:
            item = simple_item(raw) or simple_as_of_item(raw)
            if item is None:
                return None
            items.append(item)
        return items
    return None


def _items(body) -> list[tuple[str, str]] | list[tuple[str, str, datetime | None]]:
    """The (feature_type, entity_id) of each item of a training request (see _item)."""
    items = _simple_items(body)
    if items is not None:
        return items
    return [(i["feature_type"], i["entity_id"], i.get("as_of")) for i in _load(_training_request, body)["features"]]


@bp.get("/discovery")
def discover():
    """List every feature with its metadata."""
    services = _services()
    return json_response(discovery.catalog(services.registry, services.store, services.server.max_ages))


@bp.get("/parity")
def parity():
    """Check training/serving parity: stored values against the as-of path at their computed_at."""
    raw = request.args.get("sample", "100")
    if not re.fullmatch(r"[0-9]{1,5}", raw) or not 1 <= int(raw) <= 10_000:
        raise ApiError(400, "sample must be a whole number from 1 to 10000")
    services = _services()
    listed = request.args.get("feature_types")
    feature_types = [name.strip() for name in listed.split(",") if name.strip()] if listed else None
    known = services.registry.feature_types()
    for name in feature_types or []:
        if name not in known:
            raise ApiError(400, f"unknown feature_type {name!r}; known feature types: {', '.join(known)}",
                           known_feature_types=known)
    window = request.args.get("window", "60")
    if not re.fullmatch(r"[0-9]{1,6}", window):
        raise ApiError(400, "window must be a whole number of seconds")
    from feature_store.api.training_sets import busy

    if not services.heavy.acquire(blocking=False):
        raise busy(services.config.TRAINING_SET_CONCURRENCY)
    try:
        return json_response(parity_check.check(services.registry, services.store, services.warehouse,
                                                sample=int(raw), feature_types=feature_types, window=int(window)))
    finally:
        services.heavy.release()


@bp.get("/feature-sets")
def feature_sets():
    """List the named feature sets (what each model version reads)."""
    return json_response(discovery.feature_sets(_services().registry))


@bp.post("/inference")
def inference():
    """Get one feature value (or a feature set's values) for real-time inference."""
    services = _services()
    body = _json_body()
    if isinstance(body, dict) and "feature_set" in body and "feature_type" in body:
        raise ApiError(400, "give either feature_type (one value) or feature_set (its values), not both")
    if isinstance(body, dict) and "feature_set" in body:
        loaded = _load(_feature_set_request, body)
        status, answer = serve_feature_set(services.server, loaded["feature_set"], loaded["entity_id"],
                                           loaded.get("as_of"))
        if status != 200:
            answer["request_id"] = g.get("request_id")
        return json_response(answer, status)
    lookup = services.server.lookup([_item(body)])[0]
    status, body = lookup_answer(lookup, services.registry.feature_types())
    if status != 200:
        body["request_id"] = g.get("request_id")  # as every error body
    return json_response(body, status)


@bp.post("/training")
def training():
    """Get many feature values at once, in request order (misses computed together)."""
    data = _request_data()
    try:
        # Fast and exact to 64 bits; anything it cannot take exactly goes to the exact parser.
        body = orjson.loads(data)
        items = _simple_items(body)
    except (orjson.JSONDecodeError, RecursionError):
        body = items = None
    if items is None:
        body = _parsed(data)
    if isinstance(body, dict) and isinstance(body.get("features"), list):
        limit = _services().config.TRAINING_MAX_ITEMS
        if len(body["features"]) > limit:
            raise ApiError(413, f"too many features: {len(body['features'])} requested, at most {limit} per request")
    services = _services()
    lookups = services.server.lookup(items if items is not None else _items(body))
    known = services.registry.feature_types()
    now = now_seconds()
    results = [lookup_answer(lookup, known, now)[1] for lookup in lookups]
    successful = sum(1 for lookup in lookups if lookup.error is None)
    return json_response({"results": results, "total_requested": len(results), "total_successful": successful})


def _wait_requested() -> bool:
    raw = request.args.get("wait", "true").strip().lower()
    if raw not in ("true", "false"):
        raise ApiError(400, "wait must be true or false")
    return raw == "true"


def _extract_request() -> list[str] | None:
    """The feature types a POST /extract asks for; None (every feature) without a body."""
    data = _request_data()
    if not data.strip():
        return None
    try:
        body = parse_json(data)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON (expected a JSON object, or no body)") from None
    feature_types = _load(_extract_request_schema, body).get("feature_types")
    if feature_types is None:
        return None
    known = _services().registry.feature_types()
    for i, feature_type in enumerate(feature_types):
        if feature_type not in known:
            raise ApiError(400, f"feature_types[{i}]: unknown feature_type {feature_type!r}; known feature types: "
                           f"{', '.join(known)}", known_feature_types=known)
    return feature_types


@bp.post("/extract")
def extract():
    """Run batch extraction of every feature, or of some, into the online store (waits by default)."""
    wait = _wait_requested()
    feature_types = _extract_request()
    services = _services()
    runs = services.runs
    job_id, joined = runs.start_or_join(feature_types)
    status_url = url_for("features.extraction_status", job_id=job_id, _external=True)
    workers = runs.listening_workers()
    accepted = {"job_id": job_id, "status_url": status_url, "joined": joined, "workers": workers}
    if workers == 0:
        # Waiting would only run out the clock: nothing will take the run until a worker comes.
        status = runs.status(job_id)
        accepted.update(status=status.status if status else "queued", warning=(
            f"no worker listens on the extraction queue {runs.queue.name!r}: the run stays queued and "
            "starts when a worker does"))
        return json_response(accepted, 202, headers={"Location": status_url})
    status = runs.wait(job_id, services.config.EXTRACT_WAIT_SECONDS) if wait else runs.status(job_id)
    if status is None or not status.done or not wait:
        accepted["status"] = status.status if status else "queued"
        return json_response(accepted, 202, headers={"Location": status_url})
    result = status.result or {}
    if status.status == "failed":
        raise ApiError(500, status.error or "the extraction failed", job_id=job_id,
                       failed_features=result.get("failed_features", {}),
                       features_extracted=result.get("features_extracted", {}),
                       total_features=result.get("total_features", 0))
    return json_response({
        "message": "Feature extraction completed successfully",
        "features_extracted": result.get("features_extracted", {}),
        "total_features": result.get("total_features", 0),
        "job_id": job_id,
        "joined": joined,
        "drifted_features": result.get("drifted_features", []),
    })


def _limit() -> int:
    raw = request.args.get("limit", "20")
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= RUNS_LISTED_MAX:
        raise ApiError(400, f"limit must be a whole number from 1 to {RUNS_LISTED_MAX}")
    return int(raw)


@bp.get("/extract")
def extraction_runs():
    """List extraction runs, newest first."""
    return json_response({"runs": [status.summary() for status in _services().runs.runs(_limit())]})


@bp.get("/extract/<job_id>")
def extraction_status(job_id: str):
    """Get an extraction run's status, result or error."""
    status = _services().runs.status(job_id)
    if status is None:
        raise ApiError(404, f"no extraction job {job_id!r} (unknown, or expired)", job_id=job_id)
    return json_response(status.as_dict())


from feature_store.api import lineage as _lineage  # noqa: E402,F401 - registers its view on bp
from feature_store.api import statistics as _statistics  # noqa: E402,F401 - registers its view on bp
from feature_store.api import training_sets as _training_sets  # noqa: E402,F401 - registers its view on bp
