"""GET /lineage: which features read a warehouse table or column (services/lineage.py)."""

from __future__ import annotations

from flask import current_app, request

from feature_store.api import bp
from feature_store.api.errors import ApiError, json_response
from feature_store.services import lineage as lineage_service


@bp.get("/lineage")
def lineage_readers():
    """List the features that read a warehouse table or column."""
    table = request.args.get("table", "")
    column = request.args.get("column")
    if not table:
        raise ApiError(400, "table is required: GET /api/v1/features/lineage?table=policies[&column=user_id]")
    if column == "":
        raise ApiError(400, "column must not be empty (leave it out to ask about the whole table)")
    try:
        answer = lineage_service.readers(current_app.extensions["feature_store"].registry, table, column)
    except lineage_service.UnknownSource as exc:
        raise ApiError(404, str(exc)) from None
    return json_response(answer)
