"""Per-request plumbing: a request id on every answer and log line, and optional API keys.

API keys (config API_KEYS_READ, API_KEYS_ADMIN) have two scopes:
  read   discovery, inference, training
  admin  everything read allows, plus extract and job status
Clients send a key as `X-API-Key: <key>` (or `Authorization: Bearer <key>`). With no key
configured the API is open (the start-up log line says so). Keys are compared in constant time
and never logged.
"""

from __future__ import annotations

import atexit
import hmac
import itertools
import logging
import logging.handlers
import os
import queue
import re
import time

from flask import Flask, g, request

from feature_store import metrics
from feature_store.api.bodies import dumps
from feature_store.api.errors import ApiError

access_log = logging.getLogger("feature_store.access")

# The WSGI environ key of the perf_counter() at which a middleware began handling the request (see
# fast.py), when one did: the access line's duration starts there, not at the Flask view.
STARTED = "feature_store.started"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
ADMIN_ENDPOINTS = {"features.extract", "features.extraction_status", "features.extraction_runs", "features.parity"}


_PROCESS_PREFIX = os.urandom(8).hex()
_SEQUENCE = itertools.count(1)


def request_id(supplied: str | None) -> str:
    """The caller's request id when well formed, else a new one: unique per process (a random
    prefix) and per request (a counter), cheaper than a random id per request."""
    if supplied and _REQUEST_ID.fullmatch(supplied):
        return supplied
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE):016x}"


def log_access(rid: str, method: str, path: str, status: int, started: float, endpoint: str) -> None:
    """The request's access line and its metrics (`endpoint`: the route, not the raw path)."""
    seconds = time.perf_counter() - started
    access_log.info("%s %s %s %d %.1fms", rid, method, path, status, seconds * 1000)
    metrics.observe_request(endpoint, method, status, seconds)


class Gate:
    """Who may call what, from the configured keys. Flask-free: the fast path uses it too."""

    def __init__(self, read_keys: tuple[str, ...], admin_keys: tuple[str, ...]) -> None:
        self.read_keys = tuple(k.encode() for k in read_keys)
        self.admin_keys = tuple(k.encode() for k in admin_keys)
        self.configured = bool(self.read_keys or self.admin_keys)

    @staticmethod
    def _presented(x_api_key: str | None, authorization: str | None) -> bytes | None:
        key = x_api_key
        if key is None and authorization and authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
        return key.encode("utf-8", "surrogateescape") if key else None

    @staticmethod
    def _matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
        # Compare with every key (no early exit), each in constant time.
        found = False
        for key in keys:
            found |= hmac.compare_digest(presented, key)
        return found

    def check(self, x_api_key: str | None, authorization: str | None, admin: bool) -> None:
        """Raises ApiError 401 (no or unknown key) or 403 (read key, admin needed)."""
        if not self.configured:
            return
        presented = self._presented(x_api_key, authorization)
        if presented is None:
            raise ApiError(401, "missing API key: send it in the X-API-Key header")
        is_admin = self._matches(presented, self.admin_keys)
        is_reader = self._matches(presented, self.read_keys)
        if admin and not is_admin:
            if is_reader:
                raise ApiError(403, "this API key may read features but not run or follow extractions "
                                    "(admin scope needed)")
            raise ApiError(401, "invalid API key")
        if not (is_admin or is_reader):
            raise ApiError(401, "invalid API key")

    def allows(self, x_api_key: str | None, authorization: str | None, admin: bool) -> bool:
        try:
            self.check(x_api_key, authorization, admin)
            return True
        except ApiError:
            return False


def _log_in_background() -> None:
    """Access lines go through a queue to a writer thread: a request pays for a queue put, not
    for a write to stderr."""
    if getattr(access_log, "_queued", False):
        return
    lines: queue.SimpleQueue = queue.SimpleQueue()
    handlers = access_log.handlers or logging.getLogger().handlers or [logging.StreamHandler()]
    listener = logging.handlers.QueueListener(lines, *handlers, respect_handler_level=True)
    access_log.handlers = [logging.handlers.QueueHandler(lines)]
    access_log.propagate = False
    access_log._queued = True
    listener.start()
    atexit.register(listener.stop)


def init_app(app: Flask) -> None:
    config = app.extensions["feature_store"].config
    gate = Gate(config.API_KEYS_READ, config.API_KEYS_ADMIN)
    app.extensions["feature_store_gate"] = gate
    if not app.testing and os.environ.get("FEATURE_STORE_SYNC_ACCESS_LOG") != "1":
        _log_in_background()

    @app.before_request
    def start_request():
        g.request_id = request_id(request.headers.get("X-Request-ID"))
        started = request.environ.get(STARTED)
        g.started = time.perf_counter() if started is None else started
        if gate.configured and request.blueprint == "features":
            gate.check(request.headers.get("X-API-Key"), request.headers.get("Authorization"),
                       admin=request.endpoint in ADMIN_ENDPOINTS)

    @app.after_request
    def finish_request(response):
        if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
            allowed = response.headers.get("Allow", "")
            response.set_data(dumps({"success": True, "allowed_methods": [
                m.strip() for m in allowed.split(",") if m.strip()]}))
            response.mimetype = "application/json"
        rid = g.get("request_id")
        if rid:
            response.headers["X-Request-ID"] = rid
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = 'ApiKey header="X-API-Key"'
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            log_access(rid, request.method, request.path, response.status_code, g.started, endpoint)
        return response
