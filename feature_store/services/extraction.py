"""Batch extraction: every feature for every entity, warehouse -> online store."""

from __future__ import annotations

import logging
import marshal
import operator
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence

from feature_store.errors import FeatureStoreError
from feature_store.online_store import OnlineStore, format_computed_at, now_seconds
from feature_store.registry import Feature
from feature_store.services.sketches import FeatureSketch
from feature_store.services.statistics import StatisticsSettings, new_sketches, record_run
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


def _query_to_spool(warehouse: Warehouse, feature, spool, chunk_size: int,
                    id_range: IdRange | None, stages: dict[str, float], sketch: FeatureSketch | None,
                    positions: dict[str, bytes | None]) -> array:
    """Stream one feature's query into `spool` (marshalled chunks, then None); returns the
    sorted ids of the entities it saw (the run's snapshot of which entities exist). With
    `sketch`, each chunk's values are added to it too (the run's statistics, in the same pass).
    The warehouse position its query read at goes to `positions`: its values are written with
    it, so they never replace a value of a later read (a streamed change; online_store/ordering.py)."""
    ids = array("q")
    for chunk in warehouse.stream(feature, chunk_size=chunk_size, id_range=id_range, timings=stages,
                                  on_position=lambda at: positions.__setitem__(feature.feature_type, at)):
        marshal.dump(chunk, spool)
        ids.extend(entity_id for entity_id, _ in chunk)
        if sketch is not None:
            started = time.perf_counter()
            sketch.update(chunk)
            stages["statistics"] += time.perf_counter() - started
    marshal.dump(None, spool)
    if not all(map(operator.le, ids, ids[1:])):
        ids = array("q", sorted(ids))
    return ids


IdRange = tuple[int | None, int | None]


def extract_values(features: Sequence[Feature], warehouse: Warehouse, store: OnlineStore, *, stamp: int,
                   computed_at: int,
                   chunk_size: int, stages: dict[str, float], id_ranges: dict[str, IdRange] | None = None,
                   part: int = 0, on_progress: Callable[[dict], None] | None = None,
                   sketches: dict[str, FeatureSketch] | None = None,
                   positions: dict[str, bytes | None] | None = None) -> tuple[dict[str, array], dict[str, str]]:
    """Phases 1 and 2 of a run (see extract_all) for `features`, over every entity or, with
    `id_ranges` ({entity table: [lo, hi)}), for partition `part`. The run is named by its `stamp`
    (unique, later than every earlier run's); its values carry `computed_at` (the run's start).
    With `sketches` (a dict), it is filled with each written feature's statistics (sketches.py).
    With `positions` (a dict), with the warehouse position each feature's query read at.

    Returns:
        ({feature_type: sorted entity ids} of the features written, {feature_type: reason} of
        those whose query failed: nothing of theirs was written).

    Raises:
        StoreUnavailable: Redis failed while writing.
    """
    progress = on_progress or (lambda update: None)
    spools = {f.feature_type: tempfile.TemporaryFile(prefix=f"feature-store-{f.feature_type}-") for f in features}
    existing: dict[str, array] = {}
    failed: dict[str, str] = {}
    positions = {} if positions is None else positions
    try:
        started = time.perf_counter()
        stages.setdefault("query", 0.0)
        encoding = stages.setdefault("encode", 0.0)
        measuring = stages.setdefault("statistics", 0.0) if sketches is not None else 0.0
        made = new_sketches(features) if sketches is not None else {}
        # One query at a time: running them side by side was measured slower on 2 cores (the
        # encoding holds the GIL) and costs a chunk buffer per query in memory. A feature whose
        # query fails (a missing table, an unreadable row, an error part-way through the stream)
        # is left out: its spool is dropped and the other features go on.
        for feature in features:
            try:
                existing[feature.feature_type] = _query_to_spool(
                    warehouse, feature, spools[feature.feature_type], chunk_size,
                    id_ranges.get(feature.entity.table) if id_ranges else None, stages,
                    made.get(feature.feature_type), positions)
            except FeatureStoreError as exc:
                failed[feature.feature_type] = str(exc)
                log.warning("%s: query failed, its previous values stay: %s", feature.feature_type, exc)
        counts = {feature_type: len(ids) for feature_type, ids in existing.items()}
        if sketches is not None:
            sketches.update((feature_type, made[feature_type]) for feature_type in existing)
        # "query": the database, reading rows, spooling; "encode": values to their JSON;
        # "statistics": the values added to the run's sketches.
        stages["query"] += (time.perf_counter() - started - (stages["encode"] - encoding)
                            - (stages.get("statistics", 0.0) - measuring))
        log.info("queried %s%s", counts, f", failed {sorted(failed)}" if failed else "")
        progress({"phase": "write", "counts": counts})

        started = time.perf_counter()
        for feature_type, ids in existing.items():
            store.note_run_ids(feature_type, stamp, part, ids)
        with store.batch_writer(computed_at) as write:
            for feature_type in existing:
                spool = spools[feature_type]
                spool.seek(0)
                while (chunk := marshal.load(spool)) is not None:
                    write(feature_type, chunk, positions.get(feature_type))
        stages["write"] = stages.get("write", 0.0) + time.perf_counter() - started
    finally:
        for spool in spools.values():
            spool.close()
    return existing, failed


def partition_ranges(features: Sequence[Feature], warehouse: Warehouse,
                     partitions: int) -> tuple[list[dict[str, list[int]]], dict[str, str]]:
    """Split the ids of every entity table of `features` into `partitions` ranges [lo, hi) of
    equal width. Returns the ranges, and {table: reason} for the tables whose ids could not be
    read (their features fail the run; the other tables are split as usual)."""
    tables = sorted({f.entity.table for f in features})
    plans: list[dict[str, list[int]]] = [{} for _ in range(partitions)]
    failed: dict[str, str] = {}
    for table in tables:
        try:
            bounds = warehouse.id_bounds(table)
        except FeatureStoreError as exc:
            failed[table] = str(exc)
            continue
        low, high = bounds if bounds else (0, -1)
        width = max(1, -(-(high - low + 1) // partitions))
        for i, plan in enumerate(plans):
            # The outer partitions are open-ended: ids beyond the bounds (rows added since, or an
            # id at the very end of the 64-bit range, whose successor no database can bind) fall
            # in the first or the last.
            start = low + i * width
            plan[table] = [start if i > 0 else None, None if i == partitions - 1 else start + width]
    return plans, failed


def extract_all(features: Sequence[Feature], warehouse: Warehouse, store: OnlineStore, *, chunk_size: int,
                on_progress: Callable[[dict], None] | None = None,
                statistics: StatisticsSettings | None = None, job_id: str | None = None) -> dict:
    """Compute `features` for every entity and store the values; then remove the values of
    entities that no longer exist. A feature whose query fails is left as it was (its values
    still served, none removed) and the others are refreshed fully.

    Three phases, so that a failure leaves the online store as it was:
      1. query: each feature is one set-based query over its whole table, streamed in chunks of
         `chunk_size` rows and spooled to a temporary file, so memory holds chunks and entity
         ids, never a table. A feature whose query fails here writes nothing.
      2. write: the spooled values go to Redis, one pipelined batch per chunk, all with the run's
         computed_at. Values are overwritten in place, so a reader always finds either the
         previous value or the new one.
      3. remove stale: only after every write succeeded, values of entities absent from the run's
         snapshot (and not written since the run began) are deleted, for the features written.
         The candidates come from the feature's id record (the ids of the previous run and of
         values computed on demand; see online_store/id_records.py), not from a scan.

    Args:
        chunk_size: rows per streamed chunk and values per pipeline.
        on_progress: called with {"phase", "counts"} as the run advances (for job metadata).
        statistics: when enabled, each refreshed feature's statistics and drift are computed from
            the values as they stream, and stored under the run's `job_id` (statistics.py).

    Returns:
        {"features_extracted": {feature_type: count} of the features refreshed,
         "total_features": N, "failed_features": {feature_type: reason}, "removed": {...},
         "computed_at": ISO timestamp, "stages": {stage: seconds}}, and with statistics
        "statistics": {feature_type: {"count", "nulls", "distinct", "psi", "ks", "drifted"}} and
        "drifted_features": [feature_type, ...]

    Raises:
        WarehouseUnavailable: the warehouse does not answer at all (nothing was written).
        StoreUnavailable: Redis failed (values already written are fresh; nothing was removed).
    """
    # The run's stamp names it in the id records and is unique, so two runs in one second may take
    # stamps ahead of the clock; the values carry the real time the run started.
    stamp = store.run_stamp()
    computed_at = now_seconds()
    stages: dict[str, float] = {}
    started = time.perf_counter()
    warehouse.ping(batch=True)
    store.begin_run([f.feature_type for f in features])
    stages["prepare"] = time.perf_counter() - started
    sketches = {} if statistics is not None and statistics.enabled else None
    positions: dict[str, bytes | None] = {}
    existing, failed = extract_values(features, warehouse, store, stamp=stamp, computed_at=computed_at,
                                      positions=positions,
                                      chunk_size=chunk_size, stages=stages, on_progress=on_progress,
                                      sketches=sketches)
    counts = {feature_type: len(ids) for feature_type, ids in existing.items()}
    progress = on_progress or (lambda update: None)
    progress({"phase": "remove_stale", "counts": counts})
    started = time.perf_counter()
    removed = store.remove_stale(list(existing), stamp, 1, computed_at, positions=positions)
    stages["remove_stale"] = time.perf_counter() - started
    log.info("extraction done: %s values, removed %s", sum(counts.values()), removed)
    extra = {}
    if sketches is not None:
        started = time.perf_counter()
        extra = record_run(store.redis, sketches, settings=statistics, job_id=job_id,
                           computed_at=format_computed_at(computed_at))
        stages["statistics"] += time.perf_counter() - started
    return run_result(counts, failed, removed, computed_at, stages, **extra)


def run_result(counts: dict[str, int], failed: dict[str, str], removed: dict[str, int], computed_at: int,
               stages: dict[str, float], **extra) -> dict:
    """The result of a run, as GET /extract/<job_id> reports it."""
    return {
        "features_extracted": counts,
        "total_features": sum(counts.values()),
        "failed_features": failed,
        "removed": removed,
        "computed_at": format_computed_at(computed_at),
        **extra,
        "stages": {stage: round(seconds, 3) for stage, seconds in stages.items()},
    }


def failure_message(failed: dict[str, str], refreshed: int) -> str:
    """The error of a run in which some features failed: every one named, with its reason."""
    named = "; ".join(f"{feature_type}: {reason}" for feature_type, reason in failed.items())
    others = ("no other feature was refreshed" if refreshed == 0 else
              f"the {refreshed} other{'s were' if refreshed != 1 else ' was'} refreshed")
    return (f"extraction failed for {len(failed)} feature{'s' if len(failed) != 1 else ''} ({named}); "
            f"{'they keep' if len(failed) != 1 else 'it keeps'} the previous values, and {others}")
