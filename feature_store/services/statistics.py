"""Each extraction run's statistics per feature, their bounded history, and drift, in Redis.

The run builds one FeatureSketch per feature from the values it streams (sketches.py; partitions
merge theirs), then record_run() stores, per feature refreshed:

    feature-store:statistics:{feature_type}         list of JSON entries, newest first, trimmed
                                                    to STATISTICS_HISTORY (the bounded history)
    feature-store:statistics:{feature_type}:sketch  JSON {"job_id", "computed_at", "sketch"}: the
                                                    last run's whole sketch, for the next run's
                                                    drift (KS and PSI need its CDF, not a summary)

An entry: {"feature_type", "data_type", "job_id", "computed_at", "count", "nulls", "null_fraction",
"distinct", then for numbers and datetimes "min", "max", "mean", "quantiles" {"p01".."p99"},
"histogram" {"edges", "counts"} (values in the feature's own form: datetimes as ISO 8601), for
strings "top_values" [{"value", "count"}], and "drift": null on a feature's first run, else
{"psi", "ks", "bins", "drifted", "psi_threshold", "ks_threshold", "previous_job_id",
"previous_computed_at"} (drift.py)}.

Every command names one key (the store's rule), so this runs on Redis Cluster too. These keys are
the online store's Redis, apart from the values' `{feature_type}:{entity_id}` hashes (a feature
type is snake_case, so `feature-store:` never collides with one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import redis

from feature_store.errors import StoreUnavailable
from feature_store.online_store import format_computed_at
from feature_store.registry import Feature
from feature_store.services import drift
from feature_store.services.sketches import FeatureSketch

log = logging.getLogger(__name__)

_STORE_DOWN = "the online store (Redis) is unreachable or not answering"


def history_key(feature_type: str) -> str:
    return f"feature-store:statistics:{feature_type}"


def sketch_key(feature_type: str) -> str:
    return f"feature-store:statistics:{feature_type}:sketch"


@dataclass(frozen=True)
class StatisticsSettings:
    """What a run computes and keeps (config.py: STATISTICS, STATISTICS_HISTORY,
    DRIFT_PSI_THRESHOLD, DRIFT_KS_THRESHOLD)."""

    enabled: bool = True
    history: int = 30
    psi_threshold: float = 0.2
    ks_threshold: float | None = None

    @classmethod
    def from_config(cls, config) -> StatisticsSettings:
        return cls(enabled=config.STATISTICS, history=max(1, config.STATISTICS_HISTORY),
                   psi_threshold=config.DRIFT_PSI_THRESHOLD, ks_threshold=config.DRIFT_KS_THRESHOLD)


def new_sketches(features: Iterable[Feature]) -> dict[str, FeatureSketch]:
    """An empty sketch per feature, for a run (or a partition) to fill."""
    return {feature.feature_type: FeatureSketch(feature.data_type) for feature in features}


def merge_parts(parts: Sequence[dict[str, dict]], feature_types: Iterable[str]) -> dict[str, FeatureSketch]:
    """The sketches of a whole run from its partitions' serialized ones ({feature_type: state}
    each); a feature missing from any partition is left out (it was not refreshed)."""
    merged: dict[str, FeatureSketch] = {}
    for feature_type in feature_types:
        states = [part.get(feature_type) for part in parts]
        if not states or any(state is None for state in states):
            continue
        sketch = FeatureSketch.from_state(states[0])
        for state in states[1:]:
            sketch.merge(FeatureSketch.from_state(state))
            sketch.error = sketch.error or state.get("error")
        merged[feature_type] = sketch
    return merged


def record_parts(connection: redis.Redis, parts: Sequence[dict], feature_types: Iterable[str], *,
                 settings: StatisticsSettings, job_id: str, computed_at: int, stages: dict[str, float]) -> dict:
    """record_run() for a partitioned run: `parts` are the partitions' outcomes, each with its
    serialized "sketches" ({feature_type: state}); they are merged into the whole table's.
    Returns {} when statistics are off (the run result then has no statistics)."""
    if not settings.enabled:
        return {}
    started = time.perf_counter()
    sketches = merge_parts([part.get("sketches", {}) for part in parts], feature_types)
    recorded = record_run(connection, sketches, settings=settings, job_id=job_id,
                          computed_at=format_computed_at(computed_at))
    stages["statistics"] = time.perf_counter() - started
    return recorded


def record_run(connection: redis.Redis, sketches: dict[str, FeatureSketch], *, settings: StatisticsSettings,
               job_id: str | None, computed_at: str) -> dict:
    """Store the run's statistics of each refreshed feature, with its drift against the previous
    run that refreshed it, and keep the last `settings.history` entries.

    Returns:
        The run result's fields: {"statistics": {feature_type: {"count", "nulls", "distinct",
        "psi", "ks", "drifted"}}, "drifted_features": [feature types flagged]}.

    Raises:
        StoreUnavailable: Redis failed.
    """
    sketches = {ft: sketch for ft, sketch in sketches.items() if sketch.error is None}
    feature_types = list(sketches)
    if not feature_types:
        return {"statistics": {}, "drifted_features": []}
    try:
        with connection.pipeline(transaction=False) as pipe:
            for feature_type in feature_types:
                pipe.get(sketch_key(feature_type))
            previous = pipe.execute()
        entries, blobs = {}, {}
        for feature_type, blob in zip(feature_types, previous, strict=True):
            try:  # a defect here costs this feature's statistics, never the run (its values are written)
                entry = _entry(feature_type, sketches[feature_type], _loaded(blob), settings, job_id, computed_at)
                blobs[feature_type] = (orjson.dumps(entry), orjson.dumps({
                    "job_id": job_id, "computed_at": computed_at, "sketch": sketches[feature_type].state()}))
                entries[feature_type] = entry
            except (TypeError, ValueError, ArithmeticError, RuntimeError):
                log.exception("%s: no statistics recorded for this run", feature_type)
        with connection.pipeline(transaction=False) as pipe:
            for feature_type, (entry, sketch) in blobs.items():
                pipe.set(sketch_key(feature_type), sketch)
                pipe.lpush(history_key(feature_type), entry)
                pipe.ltrim(history_key(feature_type), 0, settings.history - 1)
            pipe.execute()
    except redis.RedisError as exc:
        raise StoreUnavailable(_STORE_DOWN) from exc
    summary = {ft: {"count": e["count"], "nulls": e["nulls"], "distinct": e["distinct"],
                    "psi": e["drift"]["psi"] if e["drift"] else None,
                    "ks": e["drift"]["ks"] if e["drift"] else None,
                    "drifted": bool(e["drift"] and e["drift"]["drifted"])} for ft, e in entries.items()}
    drifted = [ft for ft, s in summary.items() if s["drifted"]]
    if drifted:
        log.warning("drift against the previous run: %s",
                    ", ".join(f"{ft} (PSI {summary[ft]['psi']})" for ft in drifted))
    return {"statistics": summary, "drifted_features": drifted}


def _loaded(blob: bytes | None) -> dict | None:
    """The stored last sketch, or None when absent or unreadable (then the run has no drift)."""
    if blob is None:
        return None
    try:
        stored = orjson.loads(blob)
        stored["sketch"] = FeatureSketch.from_state(stored["sketch"])
        return stored
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError):
        log.warning("an unreadable statistics sketch was ignored (no drift this run)")
        return None


def _entry(feature_type: str, sketch: FeatureSketch, previous: dict | None, settings: StatisticsSettings,
           job_id: str | None, computed_at: str) -> dict:
    entry = {"feature_type": feature_type, "data_type": sketch.data_type.value, "job_id": job_id,
             "computed_at": computed_at, **sketch.summary(), "drift": None}
    if previous is not None and previous["sketch"].data_type is sketch.data_type and sketch.count:
        entry["drift"] = {**drift.compare(previous["sketch"], sketch, psi_threshold=settings.psi_threshold,
                                          ks_threshold=settings.ks_threshold),
                          "previous_job_id": previous.get("job_id"),
                          "previous_computed_at": previous.get("computed_at")}
    return entry


# --- reading (the API, /metrics, discovery and the catalog page) ---------------------------------
def statistics_history(connection: redis.Redis, feature_type: str, limit: int | None = None) -> list[dict]:
    """The feature's statistics of its last runs, newest first (at most `limit`; None: all kept).

    Raises:
        StoreUnavailable: Redis failed.
    """
    try:
        blobs = connection.lrange(history_key(feature_type), 0, -1 if limit is None else max(0, limit - 1))
    except redis.RedisError as exc:
        raise StoreUnavailable(_STORE_DOWN) from exc
    return [orjson.loads(blob) for blob in blobs]


def latest_statistics(connection: redis.Redis, feature_type: str) -> dict | None:
    """The statistics of the last run that refreshed the feature, or None before any.

    Raises:
        StoreUnavailable: Redis failed.
    """
    return latest_all(connection, [feature_type]).get(feature_type)


def latest_all(connection: redis.Redis, feature_types: Sequence[str]) -> dict[str, dict]:
    """latest_statistics() of several features in one round trip: {feature_type: entry} of
    those that have statistics.

    Raises:
        StoreUnavailable: Redis failed.
    """
    try:
        with connection.pipeline(transaction=False) as pipe:
            for feature_type in feature_types:
                pipe.lindex(history_key(feature_type), 0)
            blobs = pipe.execute()
    except redis.RedisError as exc:
        raise StoreUnavailable(_STORE_DOWN) from exc
    return {ft: orjson.loads(blob) for ft, blob in zip(feature_types, blobs, strict=True) if blob is not None}


def drift_state(connection: redis.Redis, feature_type: str) -> dict | None:
    """The feature's drift at its last run: {"drifted", "psi", "ks", "psi_threshold",
    "ks_threshold", "job_id", "computed_at", "previous_job_id", "previous_computed_at"}, with
    "drifted" false and the statistics null on its first run; None before any run.

    Raises:
        StoreUnavailable: Redis failed.
    """
    return drift_states(connection, [feature_type]).get(feature_type)


def drift_states(connection: redis.Redis, feature_types: Sequence[str]) -> dict[str, dict]:
    """drift_state() of several features in one round trip (those with statistics)."""
    return {ft: _drift_of(entry) for ft, entry in latest_all(connection, feature_types).items()}


def _drift_of(entry: dict) -> dict:
    found = entry.get("drift") or {}
    return {"drifted": bool(found.get("drifted")), "psi": found.get("psi"), "ks": found.get("ks"),
            "psi_threshold": found.get("psi_threshold"), "ks_threshold": found.get("ks_threshold"),
            "job_id": entry.get("job_id"), "computed_at": entry.get("computed_at"),
            "previous_job_id": found.get("previous_job_id"), "previous_computed_at": found.get("previous_computed_at")}
