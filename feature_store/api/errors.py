"""One JSON error shape for every failure: {"success": false, "error": "...", ...}."""

from __future__ import annotations

import logging

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from feature_store.api.bodies import STATUS_OF_ERROR, dumps
from feature_store.errors import FeatureStoreError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: HTTP status, message, and extra fields for the body."""

    def __init__(self, status: int, error: str, **extra) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.extra = extra


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(status: int, error: str, **extra) -> Response:
    body = {**extra, "success": False, "error": error}
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    return json_response(body, status)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.error, **exc.extra)

    @app.errorhandler(FeatureStoreError)
    def unavailable(exc: FeatureStoreError):
        status = STATUS_OF_ERROR.get(type(exc), 503)
        log.warning("%d: %s", status, exc)
        return error_response(status, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            404: "not found: see GET /api/v1/features/discovery and /api/v1/openapi.json",
            413: "request body too large",
            415: "unsupported media type: send application/json",
        }
        allowed = getattr(exc, "valid_methods", None) if exc.code == 405 else None
        if allowed:
            messages[405] = f"method not allowed here; allowed: {', '.join(sorted(allowed))}"
        response = error_response(exc.code or 500, messages.get(exc.code, exc.description or exc.name))
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # The traceback goes to the log with the request id; the client gets neither.
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return error_response(500, "internal error")
