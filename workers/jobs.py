"""RQ job functions. Thin: build the run's context from configuration, call the service.

Kept importable without side effects; connections are made when a job runs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from rq import Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from config import Config
from feature_store.errors import FeatureStoreError, WarehouseUnavailable
from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore, connect, now_seconds
from feature_store.registry import Feature
from feature_store.services.extraction import (
    extract_all,
    extract_values,
    failure_message,
    partition_ranges,
    run_result,
)
from feature_store.services.jobs import promote_run
from feature_store.services.partitions import RunPartitions
from feature_store.services.run_slots import RunSlots
from feature_store.services.statistics import StatisticsSettings, record_parts
from feature_store.versions import current_versions
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


class PartitionFailed(FeatureStoreError):
    """A partition of the run failed as a whole (Redis); its message says which and why."""


class FeaturesFailed(FeatureStoreError):
    """Some features of the run could not be refreshed (the job's meta holds the result)."""


def _epoch_seconds(iso: str) -> int:
    return int((datetime.fromisoformat(iso) - datetime(1970, 1, 1)).total_seconds())


def _now_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _features(feature_types: list[str] | None) -> list[Feature]:
    if feature_types is None:
        return list(REGISTRY)
    wanted = set(feature_types)
    return [feature for feature in REGISTRY if feature.feature_type in wanted]


def extract_features(warehouse_url: str | None = None) -> dict:
    """Extract the run's features for every entity into the online store (the job's Redis).

    The run's features are read from its record when it starts (requests may add to them while
    it is queued). As it ends, the run waiting behind it (if any) is promoted and enqueued.

    Args:
        warehouse_url: set only by embedded mode's inline jobs; a worker uses its own
            WAREHOUSE_URL from the environment.
    """
    job = get_current_job()
    config = Config.from_env()
    slots = RunSlots(job.connection, config.EXTRACT_JOB_TTL)
    try:
        features = _features(_begin(job, slots))
        warehouse = Warehouse(warehouse_url or config.WAREHOUSE_URL)
        store = _online_store(job, config)

        def on_progress(update: dict) -> None:
            job.meta["progress"] = update
            job.save_meta()

        try:
            if config.EXTRACT_PARTITIONS > 1 and warehouse_url is None:
                result = _extract_partitioned(job, features, warehouse, store, config)
            else:
                result = extract_all(features, warehouse, store, chunk_size=config.EXTRACT_CHUNK_SIZE,
                                     on_progress=on_progress, statistics=StatisticsSettings.from_config(config),
                                     job_id=job.id)
            if result["features_extracted"]:
                store.note_refreshed(result["features_extracted"], job.id, _epoch_seconds(result["computed_at"]))
        except FeatureStoreError as exc:
            # A clean failure (warehouse or store down): say why, and don't retry it now; retries are
            # for runs whose worker died (RQ's abandoned-job handling).
            if isinstance(exc, WarehouseUnavailable):  # no answer at all: every feature failed
                failed = {f.feature_type: str(exc) for f in features}
                error = failure_message(failed, 0)
            else:
                failed, error = {}, f"extraction failed: {exc}; the previous values are still served"
            _fail(job, error, run_result({}, failed, {}, 0, {}) | {"computed_at": None})
            raise
        except Exception as exc:
            log.exception("extraction failed")
            _fail(job, f"extraction failed: internal error ({exc.__class__.__name__}); see the worker log", None)
            raise
        finally:
            warehouse.dispose()
            if store.redis is not job.connection:
                store.redis.close()
        if result["failed_features"]:
            message = failure_message(result["failed_features"], len(result["features_extracted"]))
            _fail(job, message, result)
            raise FeaturesFailed(message)
        return result
    finally:
        # The run is over: the one waiting behind it (if any) becomes current and is enqueued.
        promote_run(slots, Queue(job.origin, connection=job.connection, serializer="json",
                                 is_async=warehouse_url is None), job.id)


def _online_store(job, config: Config) -> OnlineStore:
    """The online store: the job's own Redis, unless the values live elsewhere (a cluster, or a
    Redis of their own beside RQ's: RQ_REDIS_URL)."""
    versions = current_versions(REGISTRY)
    if config.REDIS_URL is None or not config.separate_rq_redis:
        return OnlineStore(job.connection, versions=versions)
    return OnlineStore(connect(config.REDIS_URL, socket_timeout=30.0, connect_timeout=5.0,
                               cluster=config.REDIS_CLUSTER), versions=versions)


def _begin(job, slots: RunSlots) -> list[str] | None:
    """Seal this run's features. A run that waited behind another is enqueued once that one is
    over; should it still be running elsewhere (it was found over too early), wait for its end,
    but never for a run that is only queued (it may be queued behind this very worker)."""
    after = job.meta.get("after")
    if after and _running(job.connection, after):
        job.meta["waiting_for"] = after
        job.save_meta()
        cleanup = _Cleanup(StartedJobRegistry(job.origin, connection=job.connection, serializer="json"))
        while _running(job.connection, after):
            time.sleep(0.2)
            cleanup.maybe()
        job.meta.pop("waiting_for", None)
    feature_types = slots.seal(job.id)
    job.meta["started_at"] = _now_iso()
    job.save_meta()
    return feature_types


def _fail(job, error: str, result: dict | None) -> None:
    job.meta["error"] = error
    if result is not None:
        job.meta["result"] = result
    job.retries_left = 0
    job.save_meta()


def _extract_partitioned(job, features: list[Feature], warehouse: Warehouse, store: OnlineStore,
                         config: Config) -> dict:
    """Run a partitioned extraction: enqueue the partitions, run the unclaimed ones here, wait
    for the rest, then remove the values of gone entities (see services/partitions.py)."""
    run = RunPartitions(job.connection, job.id, config.EXTRACT_JOB_TTL)

    def make_plan() -> dict:
        warehouse.ping(batch=True)
        ranges, failed_tables = partition_ranges(features, warehouse, config.EXTRACT_PARTITIONS)
        return {"stamp": store.run_stamp(), "computed_at": now_seconds(), "ranges": ranges,
                "failed": {f.feature_type: failed_tables[f.entity.table] for f in features
                           if f.entity.table in failed_tables}}

    plan = run.plan(make_plan)
    stamp = plan.get("stamp", plan["computed_at"])
    feature_types = [f.feature_type for f in features if f.feature_type not in plan["failed"]]
    started = time.perf_counter()
    store.begin_run(feature_types)
    queue = Queue(job.origin, connection=job.connection, serializer="json")
    for index, ranges in enumerate(plan["ranges"]):
        part_id = f"{job.id}-p{index}"
        if not Job.exists(part_id, connection=job.connection):
            queue.enqueue_call(extract_partition, kwargs={"run_id": job.id, "index": index, "ranges": ranges,
                                                          "computed_at": plan["computed_at"], "stamp": stamp,
                                                          "feature_types": feature_types},
                               job_id=part_id, timeout=config.EXTRACT_JOB_TIMEOUT, result_ttl=config.EXTRACT_JOB_TTL,
                               failure_ttl=config.EXTRACT_JOB_TTL, retry=Retry(max=2))
    registry = StartedJobRegistry(queue.name, connection=job.connection, serializer="json")
    cleanup = _Cleanup(registry)
    parts = _features(feature_types)
    try:
        for index, ranges in enumerate(plan["ranges"]):
            if run.claim(index, job.id):
                _run_partition(run, index, ranges, stamp, plan["computed_at"], parts, warehouse, store, config)
        while True:
            done, failed = run.state()
            if failed:
                raise PartitionFailed(next(iter(failed.values())))
            if len(done) == len(plan["ranges"]):
                break
            # A partition whose job is not running (still queued behind this very run, or put back
            # after its worker died) is taken over and run here: the run never waits on itself.
            for index, ranges in enumerate(plan["ranges"]):
                if index not in done and not _running(job.connection, run.owner(index)):
                    run.take_over(index, job.id)
                    _run_partition(run, index, ranges, stamp, plan["computed_at"], parts, warehouse, store, config)
            cleanup.maybe()
            time.sleep(0.2)
    except BaseException:
        _settle(job, run, len(plan["ranges"]), cleanup)
        raise
    # A feature that failed in any partition is not refreshed: none of its values is removed
    # (its other partitions' values were written, and are fresh).
    failed_features = dict(plan["failed"])
    for index in sorted(done):
        for feature_type, reason in done[index]["failed"].items():
            failed_features.setdefault(feature_type, f"partition {index}: {reason}")
    refreshed = [ft for ft in feature_types if ft not in failed_features]
    removal = time.perf_counter()
    removed = store.remove_stale(refreshed, stamp, len(plan["ranges"]), plan["computed_at"],
                                 positions=earliest_positions([done[index] for index in sorted(done)], refreshed))
    counts = {ft: sum(part["counts"][ft] for part in done.values()) for ft in refreshed}
    stages = {"partitions": removal - started, "remove_stale": time.perf_counter() - removal}
    # The partitions' sketches, merged: the statistics of the whole table.
    statistics = record_parts(store.redis, [done[index] for index in sorted(done)], refreshed, stages=stages,
                              settings=StatisticsSettings.from_config(config), job_id=job.id,
                              computed_at=plan["computed_at"])
    return run_result(counts, failed_features, removed, plan["computed_at"], stages,
                      partitions=len(plan["ranges"]), **statistics)


def earliest_positions(parts: list[dict], feature_types: list[str]) -> dict[str, bytes | None]:
    """Per feature, the earliest warehouse position its partitions' queries read at (each
    partition reads at its own). The run's stale removal then spares a value written from a later
    read (a streamed value of an entity created after the run read: ordering.py), which the values'
    computed_at alone cannot tell apart within a second, or across two hosts' clocks. None for a
    feature when a partition has no position, or one of another warehouse cluster (a value then
    goes by computed_at alone, as on SQLite). The earliest errs on keeping: a value kept that the
    run found gone stays in the feature's record, so the next run checks it again."""
    earliest: dict[str, bytes | None] = {}
    for feature_type in feature_types:
        found = [part.get("positions", {}).get(feature_type) for part in parts]
        if not found or None in found or len({position.split(":", 1)[0] for position in found}) != 1:
            earliest[feature_type] = None
            continue
        earliest[feature_type] = min(found).encode()
    return earliest


class _Cleanup:
    """RQ's abandoned-job handling, run every few seconds as an idle worker would (this worker
    is busy with the run)."""

    def __init__(self, registry: StartedJobRegistry) -> None:
        self.registry = registry
        self.last = time.monotonic()

    def maybe(self) -> None:
        if time.monotonic() - self.last > 5:
            self.registry.cleanup()
            self.last = time.monotonic()


def _settle(job, run: RunPartitions, partitions: int, cleanup: _Cleanup) -> None:
    """Before a failing run ends: no write of it may outlive it (the next run's stale removal
    must not race a late writer). Partitions no one claimed yet are claimed here, so their jobs
    skip; those running elsewhere are waited for (a dead worker's job is released by RQ's
    abandoned-job handling)."""
    try:
        for index in range(partitions):
            run.claim(index, job.id)
        while True:
            done, failed = run.state()
            if not any(index not in done and index not in failed and run.owner(index) != job.id
                       and _running(job.connection, run.owner(index)) for index in range(partitions)):
                return
            cleanup.maybe()
            time.sleep(0.2)
    except Exception:  # Redis itself failing: the run fails with its own error
        log.warning("could not wait for the run's other partitions", exc_info=True)


def _running(connection, job_id: str | None) -> bool:
    if job_id is None:
        return False
    try:
        return Job.fetch(job_id, connection=connection, serializer="json").get_status() == JobStatus.STARTED
    except NoSuchJobError:
        return False


def extract_partition(run_id: str, index: int, ranges: dict, computed_at: int,
                      feature_types: list[str] | None = None, stamp: int | None = None) -> dict:
    """One partition of a partitioned run (enqueued by the run's job); skipped when claimed."""
    job = get_current_job()
    config = Config.from_env()
    run = RunPartitions(job.connection, run_id, config.EXTRACT_JOB_TTL)
    if run.state()[1] or not _open(job.connection, run_id) or not run.claim(index, job.id):
        # Another partition failed, the run is over, or another job runs this partition.
        return {"skipped": True}
    warehouse = Warehouse(config.WAREHOUSE_URL)
    store = _online_store(job, config)
    try:
        return _run_partition(run, index, ranges, computed_at if stamp is None else stamp, computed_at,
                              _features(feature_types), warehouse, store, config)
    except Exception:
        # A clean failure is the run's to report; only a dead worker's partition is retried.
        job.retries_left = 0  # read by RQ's failure handling in this process
        raise
    finally:
        warehouse.dispose()
        if store.redis is not job.connection:
            store.redis.close()


def _open(connection, run_id: str) -> bool:
    """Whether the run's job may still use its partitions (queued, running, or put back)."""
    try:
        status = Job.fetch(run_id, connection=connection, serializer="json").get_status()
    except NoSuchJobError:
        return False
    return status not in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def _run_partition(run: RunPartitions, index: int, ranges: dict, stamp: int, computed_at: int,
                   features: list[Feature],
                   warehouse: Warehouse, store: OnlineStore, config: Config) -> dict:
    sketches = {} if config.STATISTICS else None
    positions: dict[str, bytes | None] = {}
    try:
        existing, failed = extract_values(features, warehouse, store, stamp=stamp, computed_at=computed_at,
                                          chunk_size=config.EXTRACT_CHUNK_SIZE, stages={},
                                          id_ranges={table: tuple(bounds) for table, bounds in ranges.items()},
                                          part=index, sketches=sketches, positions=positions)
    except FeatureStoreError as exc:
        run.failed(index, f"partition {index}: {exc}")
        raise
    except Exception as exc:
        log.exception("partition %d failed", index)
        run.failed(index, f"partition {index}: internal error ({exc.__class__.__name__})")
        raise
    outcome = {"counts": {feature_type: len(ids) for feature_type, ids in existing.items()}, "failed": failed,
               "positions": {feature_type: position.decode() for feature_type, position in positions.items()
                             if position is not None and feature_type in existing}}
    if sketches is not None:
        outcome["sketches"] = {feature_type: sketch.state() for feature_type, sketch in sketches.items()}
    run.done(index, outcome)
    return outcome
