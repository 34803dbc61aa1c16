"""Request parsing and answer bodies shared by the Flask views and the inference fast path
(fast.py), so both give byte-for-byte the same answers. Nothing here imports Flask."""

from __future__ import annotations

import json
from contextlib import contextmanager

import orjson

from feature_store.errors import (
    BadRequest,
    FeatureStoreError,
    StoreUnavailable,
    TooLarge,
    WarehouseDataError,
    WarehouseUnavailable,
)
from feature_store.online_store import format_computed_at, now_seconds
from feature_store.services.serving import UNKNOWN_FEATURE, Lookup
from feature_store.services.training_sets import parse_instant

STATUS_OF_ERROR: dict[type[FeatureStoreError], int] = {
    StoreUnavailable: 503, WarehouseUnavailable: 503, WarehouseDataError: 502, BadRequest: 400, TooLarge: 413,
}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes):
    """The body as JSON, exactly: integers of any size stay integers (never a float), and NaN or
    Infinity are refused. Raises ValueError (or RecursionError) when it is not JSON."""
    return json.loads(data, parse_constant=_reject_constant)


def _entity_id(value) -> str | None:
    """An entity id in its common shape (a JSON string, or an integer as its decimal form), else None."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return None


def simple_item(body) -> tuple[str, str] | None:
    """(feature_type, entity_id) when `body` is a well-formed item in its common shape, else None
    (the schema then decides, and words the error)."""
    if type(body) is dict and "as_of" not in body and "feature_set" not in body:
        feature_type = body.get("feature_type")
        entity_id = _entity_id(body.get("entity_id"))
        if type(feature_type) is str and entity_id is not None:
            return feature_type, entity_id
    return None


def simple_as_of_item(body) -> tuple[str, str, object] | None:
    """(feature_type, entity_id, as_of) when `body` is a well-formed item with an instant (the
    schema's InstantField rules, through the same parse_instant), else None."""
    if type(body) is dict and type(body.get("as_of")) is str and type(body.get("feature_type")) is str:
        entity_id = _entity_id(body.get("entity_id"))
        if entity_id is None:
            return None
        try:
            return body["feature_type"], entity_id, parse_instant(body["as_of"])
        except (ValueError, OverflowError):
            return None
    return None


def simple_set_item(body) -> tuple[str, str] | None:
    """(feature_set, entity_id) when `body` is a well-formed feature-set request in its common
    shape (no as_of), else None."""
    if type(body) is dict and "as_of" not in body and "feature_type" not in body:
        name = body.get("feature_set")
        entity_id = _entity_id(body.get("entity_id"))
        if type(name) is str and entity_id is not None:
            return name, entity_id
    return None


def serve_feature_set(server, name: str, entity_id: str, as_of=None) -> tuple[int, dict]:
    """Look up feature set `name` for one entity and shape the answer (the view and the fast
    path both answer through this)."""
    registry = server.registry
    feature_set = registry.feature_set(name)
    entity_type = registry.entity_of(feature_set).entity_type if feature_set is not None else None
    return feature_set_answer(name, entity_id, server.lookup_set(name, entity_id, as_of),
                              [s.name for s in registry.feature_sets()], entity_type, as_of)


def feature_set_answer(name: str, entity_id: str, lookups: list[Lookup] | None, known_sets: list[str],
                       entity_type: str | None = None, as_of=None) -> tuple[int, dict]:
    """(HTTP status, body) of a feature set's values for one entity."""
    body: dict = {"feature_set": name, "entity_id": entity_id}
    if entity_type is not None:
        body["entity_type"] = entity_type
    if as_of is not None:
        body["as_of"] = format_instant(as_of)
    if lookups is None:
        body.update(values=None, success=False, known_feature_sets=known_sets,
                    error=f"unknown feature_set {name!r}; known feature sets: {', '.join(known_sets)}")
        return 404, body
    missing = [lookup for lookup in lookups if lookup.error is not None]
    if missing:
        when = f"did not exist at {format_instant(as_of)}" if as_of is not None else "does not exist"
        body.update(values=None, success=False, error=f"no {name} values: entity {entity_id!r} {when}")
        return 404, body
    now = now_seconds()
    body["values"] = {lookup.feature_type: {"feature_value": orjson.Fragment(lookup.value),
                                            "computed_at": format_computed_at(lookup.computed_at),
                                            "age_seconds": max(0, now - lookup.computed_at), "stale": lookup.stale}
                      for lookup in lookups}
    body["success"] = True
    return 200, body


def lookup_answer(lookup: Lookup, known_feature_types: list[str], now: int | None = None) -> tuple[int, dict]:
    """(HTTP status, body) of one lookup, as /inference answers it (and /training lists it).
    `age_seconds` is the value's age at `now` (default: the current second)."""
    if lookup.error is None:
        body = {
            "feature_type": lookup.feature_type,
            "entity_id": lookup.entity_id,
            "feature_value": orjson.Fragment(lookup.value),
            "computed_at": format_computed_at(lookup.computed_at),
            "age_seconds": max(0, (now_seconds() if now is None else now) - lookup.computed_at),
            "stale": lookup.stale,
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
