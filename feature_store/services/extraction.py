"""Batch extraction: every feature for every entity, warehouse -> online store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from feature_store.online_store import OnlineStore, format_computed_at, now_micros
from feature_store.registry import Registry
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


def extract_all(registry: Registry, warehouse: Warehouse, store: OnlineStore, *, chunk_size: int,
                on_progress: Callable[[dict], None] | None = None) -> dict:
    """Compute every feature for every entity and store the values; then remove the values of
    entities that no longer exist.

    Each feature is one set-based query over its whole table, streamed in chunks of `chunk_size`
    rows, each chunk written through one Redis pipeline. Every value of the run carries the same
    computed_at (the run's start). Stale values are removed only after every write succeeded, so
    a failed run leaves each value either as it was or freshly computed, and never removes one.

    Args:
        chunk_size: rows per streamed chunk and values per pipeline.
        on_progress: called with the counts so far after each feature (for job metadata).

    Returns:
        {"features_extracted": {feature_type: count}, "total_features": N, "removed": {...},
         "computed_at": ISO timestamp, "stages": {stage: seconds}}

    Raises:
        WarehouseUnavailable, StoreUnavailable: the run failed; nothing was removed.
    """
    computed_at = now_micros()
    counts: dict[str, int] = {}
    stages = {"query_and_encode": 0.0, "write": 0.0, "remove_stale": 0.0}
    for feature in registry:
        count = 0
        chunks = warehouse.stream(feature, chunk_size=chunk_size)
        while True:
            started = time.perf_counter()
            chunk = next(chunks, None)
            stages["query_and_encode"] += time.perf_counter() - started
            if chunk is None:
                break
            started = time.perf_counter()
            count += store.write(feature.feature_type, chunk, computed_at)
            stages["write"] += time.perf_counter() - started
        counts[feature.feature_type] = count
        log.info("extracted %s: %d values", feature.feature_type, count)
        if on_progress:
            on_progress(dict(counts))

    started = time.perf_counter()
    removed: dict[str, int] = {}
    for entity in registry.entities():
        existing = warehouse.entity_ids(entity)
        for feature in registry:
            if feature.entity == entity:
                removed[feature.feature_type] = store.remove_stale(feature.feature_type, existing, computed_at)
    stages["remove_stale"] = time.perf_counter() - started

    return {
        "features_extracted": counts,
        "total_features": sum(counts.values()),
        "removed": removed,
        "computed_at": format_computed_at(computed_at),
        "stages": {stage: round(seconds, 3) for stage, seconds in stages.items()},
    }
