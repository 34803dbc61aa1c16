"""GET /statistics: each feature's statistics and drift from its extraction runs
(services/statistics.py)."""

from __future__ import annotations

import re

from flask import current_app, request

from feature_store.api import bp
from feature_store.api.errors import ApiError, json_response
from feature_store.services import statistics

HISTORY_LISTED_MAX = 1000


def _limit() -> int | None:
    raw = request.args.get("limit")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= HISTORY_LISTED_MAX:
        raise ApiError(400, f"limit must be a whole number from 1 to {HISTORY_LISTED_MAX}")
    return int(raw)


@bp.get("/statistics")
def statistics_latest():
    """Get every feature's statistics from its last extraction run, with its drift."""
    services = current_app.extensions["feature_store"]
    known = services.registry.feature_types()
    latest = statistics.latest_all(services.store.redis, known)
    return json_response({"features": [{"feature_type": feature_type, "latest": latest.get(feature_type)}
                                       for feature_type in known],
                          "drifted_features": [ft for ft in known if ft in latest and (latest[ft].get("drift") or {})
                                               .get("drifted")]})


@bp.get("/statistics/<feature_type>")
def feature_statistics(feature_type: str):
    """Get a feature's statistics: its last extraction run's and its history, newest first."""
    services = current_app.extensions["feature_store"]
    feature = services.registry.get(feature_type)
    if feature is None:
        known = services.registry.feature_types()
        raise ApiError(404, f"unknown feature_type {feature_type!r}; known feature types: {', '.join(known)}",
                       known_feature_types=known)
    limit = _limit()
    history = statistics.statistics_history(services.store.redis, feature_type, limit)
    return json_response({"feature_type": feature_type, "data_type": feature.data_type.value,
                          "latest": history[0] if history else None, "history": history})
