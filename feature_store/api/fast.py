"""The inference fast path: WSGI middleware that answers the common POST /inference itself.

Inference sits on callers' hot path, and for a cached value Flask's per-request machinery
(request and response objects, routing, hooks) costs more than the lookup. This middleware
answers a well-formed request directly, with the same lookup service, the same answer bodies
(bodies.py), the same request ids, access log line and API-key rules as the Flask view. Anything
else (malformed or chunked bodies, an unauthorised caller, other paths) goes to Flask untouched,
so every error answer still comes from one place.
"""

from __future__ import annotations

import io
import logging
import time
from http import HTTPStatus

import orjson

from feature_store.api import access
from feature_store.api.bodies import (
    STATUS_OF_ERROR,
    body_deadline,
    dumps,
    lookup_answer,
    serve_feature_set,
    simple_item,
    simple_set_item,
)
from feature_store.errors import FeatureStoreError

log = logging.getLogger(__name__)

PATH = "/api/v1/features/inference"
_REASONS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


class FastInference:
    def __init__(self, app) -> None:
        services = app.extensions["feature_store"]
        self.flask = app.wsgi_app
        self.server = services.server
        self.known = services.registry.feature_types()
        self.max_length = services.config.MAX_CONTENT_LENGTH
        self.body_timeout = services.config.REQUEST_BODY_TIMEOUT
        self.gate: access.Gate = app.extensions["feature_store_gate"]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.flask(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length < 0 or length > self.max_length:  # chunked, absent or too large: Flask decides
            return self.flask(environ, start_response)
        started = time.perf_counter()
        # A request handed over to Flask is timed from here, so its access line covers the body
        # read below (a body that stops arriving waits REQUEST_BODY_TIMEOUT in it).
        environ[access.STARTED] = started
        try:
            with body_deadline(environ, self.body_timeout):
                body = environ["wsgi.input"].read(length)
        except OSError:  # TimeoutError: the body did not arrive in time
            environ["wsgi.input"] = io.BytesIO()
            environ["feature_store.body_timed_out"] = True
            return self.flask(environ, start_response)
        environ["wsgi.input"] = io.BytesIO(body)  # Flask can still read it if we hand over
        if self.gate.configured and not self.gate.allows(environ.get("HTTP_X_API_KEY"),
                                                         environ.get("HTTP_AUTHORIZATION"), admin=False):
            return self.flask(environ, start_response)
        try:
            # orjson is exact for 64-bit integers; a larger one arrives as a float, which is not a
            # simple item, so the Flask view (exact for any size) takes it.
            parsed = orjson.loads(body)
            item = simple_item(parsed)
            set_item = simple_set_item(parsed) if item is None else None
        except (orjson.JSONDecodeError, RecursionError):
            item = set_item = None
        if item is None and set_item is None:
            return self.flask(environ, start_response)

        rid = access.request_id(environ.get("HTTP_X_REQUEST_ID"))
        try:
            if item is not None:
                status, answer = lookup_answer(self.server.lookup([item])[0], self.known)
            else:
                status, answer = serve_feature_set(self.server, *set_item)
            if status != 200:
                answer["request_id"] = rid  # as every error body
        except FeatureStoreError as exc:
            status = STATUS_OF_ERROR.get(type(exc), 503)
            log.warning("%d: %s", status, exc)
            answer = {"success": False, "error": str(exc), "request_id": rid}
        except Exception:
            log.exception("unhandled error (request %s)", rid)
            status, answer = 500, {"success": False, "error": "internal error", "request_id": rid}
        data = dumps(answer)
        start_response(_REASONS[status], [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                                          ("X-Request-ID", rid)])
        access.log_access(rid, "POST", PATH, status, started, PATH)
        return [data]
