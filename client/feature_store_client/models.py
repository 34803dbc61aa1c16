"""What the client returns: small frozen dataclasses over the server's JSON. Each keeps the answer
it came from in `raw` (fields the server adds later are there). Times are naive datetimes in UTC,
as the server gives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from the server (UTC, no offset) as a datetime; None stays None."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Feature:
    """One entry of GET /discovery."""

    feature_type: str
    name: str
    description: str
    entity_type: str
    data_type: str
    created_at: datetime | None
    version: int | None
    feature_sets: tuple[str, ...]
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict) -> Feature:
        return cls(feature_type=body["feature_type"], name=body.get("name", ""),
                   description=body.get("description", ""), entity_type=body.get("entity_type", ""),
                   data_type=body.get("data_type", ""), created_at=parse_time(body.get("created_at")),
                   version=body.get("version"), feature_sets=tuple(body.get("feature_sets") or ()), raw=body)


@dataclass(frozen=True)
class FeatureSet:
    """One entry of GET /feature-sets: the features a model version reads."""

    name: str
    description: str
    entity_type: str
    feature_types: tuple[str, ...]
    created_at: datetime | None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict) -> FeatureSet:
        return cls(name=body["name"], description=body.get("description", ""),
                   entity_type=body.get("entity_type", ""), feature_types=tuple(body.get("feature_types") or ()),
                   created_at=parse_time(body.get("created_at")), raw=body)


@dataclass(frozen=True)
class Value:
    """One feature value of one entity (lookup(), and each item of values()).

    `ok` is False when the server had no value for the item (unknown feature type, an entity that
    does not exist, or did not exist at `as_of`); `error` then says why and `value` is None.
    `value` is the JSON value as served: datetimes are ISO 8601 strings (training_set() types them).
    `age_seconds` is the value's age when served; `stale` is True when it is older than its
    feature's max age and was served because the warehouse could not recompute it.
    """

    feature_type: str
    entity_id: str
    value: Any
    computed_at: datetime | None
    as_of: datetime | None = None
    error: str | None = None
    age_seconds: int | None = None
    stale: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_json(cls, body: dict) -> Value:
        ok = body.get("success", True) is not False
        return cls(feature_type=body.get("feature_type"), entity_id=body.get("entity_id"),
                   value=body.get("feature_value"), computed_at=parse_time(body.get("computed_at")),
                   as_of=parse_time(body.get("as_of")),
                   error=None if ok else (body.get("error") or "no value"),
                   age_seconds=body.get("age_seconds"), stale=body.get("stale") is True, raw=body)


@dataclass(frozen=True)
class Run:
    """An extraction run: the 202 of POST /extract?wait=false, GET /extract/<job_id>, or an entry
    of GET /extract.

    `status` is queued, started, finished or failed. `features_extracted`, `total_features` and
    `failed_features` are filled once the run ended (from its result); `result` is the run's whole
    result (stages, removed, computed_at) when it got as far as writing.
    """

    job_id: str
    status: str
    trigger: str | None = None
    feature_types: tuple[str, ...] | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    result: dict | None = None
    error: str | None = None
    features_extracted: dict | None = None
    total_features: int | None = None
    failed_features: dict | None = None
    joined: bool | None = None
    workers: int | None = None
    warning: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed")

    @property
    def ok(self) -> bool:
        return self.status == "finished"

    @property
    def seconds(self) -> float | None:
        """How long it ran (started to ended), once it ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @classmethod
    def from_json(cls, body: dict) -> Run:
        result = body.get("result")
        from_result = result if isinstance(result, dict) else {}

        def ended(name: str):
            return body[name] if name in body else from_result.get(name)

        types = body.get("feature_types")
        return cls(job_id=body["job_id"], status=body.get("status", "queued"), trigger=body.get("trigger"),
                   feature_types=tuple(types) if isinstance(types, list) else None,
                   enqueued_at=parse_time(body.get("enqueued_at")), started_at=parse_time(body.get("started_at")),
                   ended_at=parse_time(body.get("ended_at")), result=result, error=body.get("error"),
                   features_extracted=ended("features_extracted"), total_features=ended("total_features"),
                   failed_features=ended("failed_features"), joined=body.get("joined"),
                   workers=body.get("workers"), warning=body.get("warning"), raw=body)
