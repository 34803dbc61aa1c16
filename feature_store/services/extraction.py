"""Batch extraction: every feature for every entity, warehouse -> online store."""

from __future__ import annotations

import logging
import marshal
import tempfile
import time
from collections.abc import Callable

from feature_store.online_store import OnlineStore, format_computed_at
from feature_store.registry import Registry
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


def extract_all(registry: Registry, warehouse: Warehouse, store: OnlineStore, *, chunk_size: int,
                on_progress: Callable[[dict], None] | None = None) -> dict:
    """Compute every feature for every entity and store the values; then remove the values of
    entities that no longer exist.

    Three phases, so that a failure leaves the online store as it was:
      1. query: each feature is one set-based query over its whole table, streamed in chunks of
         `chunk_size` rows and spooled to a temporary file (memory stays flat at any size). A
         warehouse that fails here fails the run before anything was written.
      2. write: the spooled values go to Redis, one pipeline per chunk, all with the same
         computed_at (the run's start). Values are overwritten in place, so a reader always finds
         either the previous value or the new one.
      3. remove stale: only after every write succeeded, values of entities absent from the
         warehouse (and not written since the run began) are deleted.

    Args:
        chunk_size: rows per streamed chunk and values per pipeline.
        on_progress: called with {"phase", "counts"} as the run advances (for job metadata).

    Returns:
        {"features_extracted": {feature_type: count}, "total_features": N, "removed": {...},
         "computed_at": ISO timestamp, "stages": {stage: seconds}}

    Raises:
        WarehouseUnavailable: phase 1 or 3 failed (in phase 1, nothing was written).
        StoreUnavailable: Redis failed (values already written are fresh; nothing was removed).
    """
    computed_at = store.run_stamp()
    counts: dict[str, int] = {}
    stages: dict[str, float] = {}
    progress = on_progress or (lambda update: None)
    with tempfile.TemporaryFile(prefix="feature-store-extraction-") as spool:
        started = time.perf_counter()
        for feature in registry:
            count = 0
            for chunk in warehouse.stream(feature, chunk_size=chunk_size):
                marshal.dump(chunk, spool)
                count += len(chunk)
            marshal.dump(None, spool)  # end of this feature's chunks
            counts[feature.feature_type] = count
            log.info("queried %s: %d values", feature.feature_type, count)
            progress({"phase": "query", "counts": dict(counts)})
        stages["query"] = time.perf_counter() - started

        started = time.perf_counter()
        spool.seek(0)
        written: dict[str, int] = {}
        for feature in registry:
            written[feature.feature_type] = 0
            while (chunk := marshal.load(spool)) is not None:
                written[feature.feature_type] += store.write(feature.feature_type, chunk, computed_at)
            progress({"phase": "write", "counts": dict(written)})
        stages["write"] = time.perf_counter() - started

    started = time.perf_counter()
    existing = {}
    for entity in registry.entities():
        ids = warehouse.entity_ids(entity)
        existing.update({f.feature_type: ids for f in registry if f.entity == entity})
    removed = store.remove_stale(existing, computed_at)
    stages["remove_stale"] = time.perf_counter() - started
    log.info("extraction done: %s values, removed %s", sum(counts.values()), removed)

    return {
        "features_extracted": counts,
        "total_features": sum(counts.values()),
        "removed": removed,
        "computed_at": format_computed_at(computed_at),
        "stages": {stage: round(seconds, 3) for stage, seconds in stages.items()},
    }
