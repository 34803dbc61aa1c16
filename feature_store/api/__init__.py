"""The HTTP API: one blueprint under /api/v1/features. Views are thin: parse, call a service,
shape the answer."""

from __future__ import annotations

import json

import orjson
from flask import Blueprint, current_app, request, url_for
from marshmallow import ValidationError

from feature_store.api.errors import ApiError, json_response
from feature_store.api.schemas import FeatureRequestSchema, TrainingRequestSchema, first_error
from feature_store.online_store import format_computed_at
from feature_store.services import discovery
from feature_store.services.serving import UNKNOWN_FEATURE, Lookup

bp = Blueprint("features", __name__, url_prefix="/api/v1/features")

_feature_request = FeatureRequestSchema()
_training_request = TrainingRequestSchema()


def _services():
    return current_app.extensions["feature_store"]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _json_body():
    """The request body parsed as JSON, exactly (integers stay integers of any size)."""
    data = request.get_data(cache=False)
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body must be a JSON object") from None


def _load(schema, body):
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise ApiError(400, first_error(exc.messages)) from None


def _item(body) -> tuple[str, str]:
    """(feature_type, entity_id) of one request item.

    The common well-formed item is recognised directly (inference's hot path); anything else goes
    through the schema, which accepts exactly the same items and words the error for the rest.
    """
    if type(body) is dict:
        feature_type = body.get("feature_type")
        entity_id = body.get("entity_id")
        if type(feature_type) is str:
            if type(entity_id) is str:
                return feature_type, entity_id
            if type(entity_id) is int:
                return feature_type, str(entity_id)
    item = _load(_feature_request, body)
    return item["feature_type"], item["entity_id"]


def _items(body) -> list[tuple[str, str]]:
    """The (feature_type, entity_id) of each item of a training request (see _item)."""
    if type(body) is dict and type(body.get("features")) is list:
        items = []
        for item in body["features"]:
            if type(item) is dict:
                feature_type = item.get("feature_type")
                entity_id = item.get("entity_id")
                if type(feature_type) is str:
                    if type(entity_id) is str:
                        items.append((feature_type, entity_id))
                        continue
                    if type(entity_id) is int:
                        items.append((feature_type, str(entity_id)))
                        continue
            break
        else:
            return items
    return [(i["feature_type"], i["entity_id"]) for i in _load(_training_request, body)["features"]]


def _answer(lookup: Lookup) -> dict:
    if lookup.error is None:
        return {
            "feature_type": lookup.feature_type,
            "entity_id": lookup.entity_id,
            "feature_value": orjson.Fragment(lookup.value),
            "computed_at": format_computed_at(lookup.computed_at),
            "success": True,
        }
    return {
        "feature_type": lookup.feature_type,
        "entity_id": lookup.entity_id,
        "feature_value": None,
        "success": False,
        "error": _lookup_error(lookup),
    }


def _lookup_error(lookup: Lookup) -> str:
    if lookup.error == UNKNOWN_FEATURE:
        known = ", ".join(_services().registry.feature_types())
        return f"unknown feature_type {lookup.feature_type!r}; known feature types: {known}"
    return f"no {lookup.feature_type} value: entity {lookup.entity_id!r} does not exist"


@bp.get("/discovery")
def discover():
    """List every feature with its metadata."""
    return json_response(discovery.catalog(_services().registry))


@bp.post("/inference")
def inference():
    """Get one feature value for real-time inference (computed on demand when not cached)."""
    lookup = _services().server.lookup([_item(_json_body())])[0]
    if lookup.error is None:
        return json_response(_answer(lookup))
    body = _answer(lookup)
    if lookup.error == UNKNOWN_FEATURE:
        body["known_feature_types"] = _services().registry.feature_types()
    return json_response(body, 404)


@bp.post("/training")
def training():
    """Get many feature values at once, in request order (misses computed together)."""
    body = _json_body()
    if isinstance(body, dict) and isinstance(body.get("features"), list):
        limit = _services().config.TRAINING_MAX_ITEMS
        if len(body["features"]) > limit:
            raise ApiError(413, f"too many features: {len(body['features'])} requested, at most {limit} per request")
    lookups = _services().server.lookup(_items(body))
    results = [_answer(lookup) for lookup in lookups]
    successful = sum(1 for lookup in lookups if lookup.error is None)
    return json_response({"results": results, "total_requested": len(results), "total_successful": successful})


def _wait_requested() -> bool:
    raw = request.args.get("wait", "true").strip().lower()
    if raw in ("true", "1", "yes", ""):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ApiError(400, "wait must be true or false")


@bp.post("/extract")
def extract():
    """Run batch extraction of every feature into the online store (waits by default)."""
    wait = _wait_requested()
    services = _services()
    job_id, joined = services.runs.start_or_join()
    status_url = url_for("features.extraction_status", job_id=job_id, _external=True)
    status = (services.runs.wait(job_id, services.config.EXTRACT_WAIT_SECONDS) if wait
              else services.runs.status(job_id))
    if status is None or not status.done or not wait:
        return json_response(
            {"job_id": job_id, "status": status.status if status else "queued", "status_url": status_url,
             "joined": joined},
            202, headers={"Location": status_url},
        )
    if status.status == "failed":
        raise ApiError(500, status.error or "the extraction failed", job_id=job_id)
    result = status.result or {}
    return json_response({
        "message": "Feature extraction completed successfully",
        "features_extracted": result.get("features_extracted", {}),
        "total_features": result.get("total_features", 0),
        "job_id": job_id,
        "joined": joined,
    })


@bp.get("/extract/<job_id>")
def extraction_status(job_id: str):
    """Get an extraction run's status, result or error."""
    status = _services().runs.status(job_id)
    if status is None:
        raise ApiError(404, f"no extraction job {job_id!r} (unknown, or expired)", job_id=job_id)
    return json_response(status.as_dict())

