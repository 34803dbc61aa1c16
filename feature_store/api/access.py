"""Per-request plumbing: a request id on every answer and log line, and optional API keys.

API keys (config API_KEYS_READ, API_KEYS_ADMIN) have two scopes:
  read   discovery, inference, training
  admin  everything read allows, plus extract and job status
Clients send a key as `X-API-Key: <key>` (or `Authorization: Bearer <key>`). With no key
configured the API is open (the start-up log line says so). Keys are compared in constant time
and never logged.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

import orjson
from flask import Flask, g, request

from feature_store.api.errors import ApiError

access_log = logging.getLogger("feature_store.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
ADMIN_ENDPOINTS = {"features.extract", "features.extraction_status"}


def _presented_key() -> bytes | None:
    key = request.headers.get("X-API-Key")
    if key is None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key.encode("utf-8", "surrogateescape") if key else None


def _matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    # Compare with every key (no early exit), each in constant time.
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key)
    return found


def init_app(app: Flask) -> None:
    config = app.extensions["feature_store"].config
    read_keys = tuple(k.encode() for k in config.API_KEYS_READ)
    admin_keys = tuple(k.encode() for k in config.API_KEYS_ADMIN)
    keys_configured = bool(read_keys or admin_keys)

    @app.before_request
    def start_request():
        supplied = request.headers.get("X-Request-ID")
        g.request_id = supplied if supplied and _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        g.started = time.perf_counter()
        if not keys_configured or request.blueprint != "features":
            return None
        presented = _presented_key()
        if presented is None:
            raise ApiError(401, "missing API key: send it in the X-API-Key header")
        is_admin = _matches(presented, admin_keys)
        is_reader = _matches(presented, read_keys)
        if request.endpoint in ADMIN_ENDPOINTS:
            if not is_admin:
                if is_reader:
                    raise ApiError(403, "this API key may read features but not run or follow extractions "
                                        "(admin scope needed)")
                raise ApiError(401, "invalid API key")
        elif not (is_admin or is_reader):
            raise ApiError(401, "invalid API key")
        return None

    @app.after_request
    def finish_request(response):
        if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
            allowed = response.headers.get("Allow", "")
            response.set_data(orjson.dumps({"success": True, "allowed_methods": [
                m.strip() for m in allowed.split(",") if m.strip()]}))
            response.mimetype = "application/json"
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = 'ApiKey header="X-API-Key"'
            access_log.info("%s %s %s %d %.1fms", request_id, request.method, request.path, response.status_code,
                            (time.perf_counter() - g.started) * 1000)
        return response

