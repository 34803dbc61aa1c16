"""Exceptions: each carries the server's message, the HTTP status and the request id.

    FeatureStoreError            anything this client raises about a call
    ├── BadRequest               400, 415 (and 413: TooLarge): the request is wrong; not retried
    │   └── TooLarge             413
    ├── Unauthorized             401: no API key, or an unknown one
    │   └── Forbidden            403: a read key on an admin call (extraction)
    ├── NotFound                 404: unknown feature, feature set, entity or run
    ├── Unavailable              503, or no answer (connection refused or lost, timeout) after the retries
    │   └── RequestTimeout       no answer within the client's timeout
    ├── ServerError              500, 502 and other 5xx
    │   └── ExtractionFailed     an extraction run failed (failed_features, features_extracted)
    ├── ExtractionTimeout        extract(timeout=...) ran out before the run ended (the run goes on)
    └── IncompleteResponse       a training set came back cut off (fewer rows than X-Total-Rows)
"""

from __future__ import annotations

from typing import Any


class FeatureStoreError(Exception):
    """A call failed.

    Attributes:
        message: the server's `error` (or what went wrong on the way, when no answer came).
        status: the HTTP status, or None when there was no error answer.
        request_id: the server's request id (the `request_id` of the error body, else the
            `X-Request-ID` header), to find the request in the server's log.
        body: the error answer's JSON object (e.g. `known_feature_types`), or {}.
    """

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.body = body or {}

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.request_id:
            details.append(f"request {self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class BadRequest(FeatureStoreError):
    """400 (or 415): the request is malformed; the message names what is wrong."""


class TooLarge(BadRequest):
    """413: too many items, rows or bytes for one request."""


class Unauthorized(FeatureStoreError):
    """401: a missing or unknown API key."""


class Forbidden(Unauthorized):
    """403: the key may read features but not run or follow extractions (admin scope needed)."""


class NotFound(FeatureStoreError):
    """404: an unknown feature type, feature set or run, or an entity that does not exist."""


class Unavailable(FeatureStoreError):
    """503 (Redis or the warehouse down), or no answer at all, after the client's retries."""


class RequestTimeout(Unavailable):
    """No answer within the client's timeout (after the retries, where the call is retried)."""


class ServerError(FeatureStoreError):
    """500, 502 (a warehouse row the feature cannot read) or another 5xx."""


class ExtractionFailed(ServerError):
    """An extraction run ended failed. The features that failed kept their previous values; the
    others were refreshed.

    Attributes:
        job_id: the run.
        failed_features: {feature_type: reason} of the features whose query failed.
        features_extracted: {feature_type: count} of the features that were refreshed.
        total_features: the sum of features_extracted.
        run: the run's status (a Run) when it was read from GET /extract/<job_id>, else None.
    """

    def __init__(self, message: str, *, job_id: str | None = None, failed_features: dict | None = None,
                 features_extracted: dict | None = None, total_features: int = 0, run: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.job_id = job_id
        self.failed_features = dict(failed_features or {})
        self.features_extracted = dict(features_extracted or {})
        self.total_features = total_features
        self.run = run


class ExtractionTimeout(FeatureStoreError):
    """extract(timeout=...) ran out while the run was still queued or running; it goes on (follow
    it with run(job_id)).

    Attributes:
        job_id: the run.
        run: its last status seen (a Run).
    """

    def __init__(self, message: str, *, job_id: str, run: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.job_id = job_id
        self.run = run


class IncompleteResponse(FeatureStoreError):
    """A training set came back with fewer rows than the server announced (X-Total-Rows) or than
    the spine had, or cut off mid-stream: the server lost the warehouse part-way."""


def error_for_status(status: int) -> type[FeatureStoreError]:
    """The exception class of an HTTP error status."""
    if status == 413:
        return TooLarge
    if status in (400, 415):
        return BadRequest
    if status == 401:
        return Unauthorized
    if status == 403:
        return Forbidden
    if status == 404:
        return NotFound
    if status in (503, 504):
        return Unavailable
    if status >= 500:
        return ServerError
    return FeatureStoreError
