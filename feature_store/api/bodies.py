"""Request parsing and answer bodies shared by the Flask views and the inference fast path
(fast.py), so both give byte-for-byte the same answers. Nothing here imports Flask."""

from __future__ import annotations

import json
from contextlib import contextmanager

import orjson

from feature_store.errors import FeatureStoreError, StoreUnavailable, WarehouseDataError, WarehouseUnavailable
from feature_store.online_store import format_computed_at
from feature_store.services.serving import UNKNOWN_FEATURE, Lookup

STATUS_OF_ERROR: dict[type[FeatureStoreError], int] = {
    StoreUnavailable: 503, WarehouseUnavailable: 503, WarehouseDataError: 502,
}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes):
    """The body as JSON, exactly: integers of any size stay integers (never a float), and NaN or
    Infinity are refused. Raises ValueError (or RecursionError) when it is not JSON."""
    return json.loads(data, parse_constant=_reject_constant)


def simple_item(body) -> tuple[str, str] | None:
    """(feature_type, entity_id) when `body` is a well-formed item in its common shape, else None
    (the schema then decides, and words the error)."""
    if type(body) is dict and "as_of" not in body:
        feature_type = body.get("feature_type")
        entity_id = body.get("entity_id")
        if type(feature_type) is str:
            if type(entity_id) is str:
                return feature_type, entity_id
            if type(entity_id) is int:
                return feature_type, str(entity_id)
    return None


def lookup_answer(lookup: Lookup, known_feature_types: list[str]) -> tuple[int, dict]:
    """(HTTP status, body) of one lookup, as /inference answers it (and /training lists it)."""
    if lookup.error is None:
        body = {
            "feature_type": lookup.feature_type,
            "entity_id": lookup.entity_id,
            "feature_value": orjson.Fragment(lookup.value),
            "computed_at": format_computed_at(lookup.computed_at),
            "success": True,
        }
        if lookup.as_of is not None:
            body["as_of"] = format_instant(lookup.as_of)
        return 200, body
    body = {"feature_type": lookup.feature_type, "entity_id": lookup.entity_id, "feature_value": None,
            "success": False}
    if lookup.as_of is not None:
        body["as_of"] = format_instant(lookup.as_of)
    if lookup.error == UNKNOWN_FEATURE:
        body["error"] = (f"unknown feature_type {lookup.feature_type!r}; known feature types: "
                         f"{', '.join(known_feature_types)}")
        body["known_feature_types"] = known_feature_types
    elif lookup.as_of is not None:
        body["error"] = (f"no {lookup.feature_type} value: entity {lookup.entity_id!r} did not exist at "
                         f"{format_instant(lookup.as_of)}")
    else:
        body["error"] = f"no {lookup.feature_type} value: entity {lookup.entity_id!r} does not exist"
    return 404, body


def format_instant(moment) -> str:
    """An as-of instant as answers echo it: ISO 8601, UTC, no offset."""
    return moment.isoformat()


def dumps(body) -> bytes:
    """orjson, tolerating echoed input that is not valid Unicode (lone surrogates are replaced)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return orjson.dumps(_scrub(body))


def _scrub(value):
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


@contextmanager
def body_deadline(environ, seconds: float):
    """Reads of the request body inside the block give up after `seconds` without data (a
    TimeoutError), so a client that declares a body and stops sending cannot hold a server thread.
    Only gunicorn exposes its socket; elsewhere this does nothing. The response is written
    without the deadline."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        yield
        return
    sock.settimeout(seconds)
    try:
        yield
    finally:
        try:
            sock.settimeout(None)  # blocking again, as gunicorn keeps it while handling
        except OSError:
            pass
