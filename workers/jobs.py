"""RQ job functions. Thin: build the run's context from configuration, call the service.

Kept importable without side effects; connections are made when a job runs.
"""

from __future__ import annotations

import logging
import time

from rq import Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from config import Config
from feature_store.errors import FeatureStoreError
from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore, format_computed_at
from feature_store.services.extraction import extract_all, extract_values, partition_ranges
from feature_store.services.partitions import RunPartitions
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


class PartitionFailed(FeatureStoreError):
    """A partition of the run failed; its message says which and why."""


def extract_features(warehouse_url: str | None = None) -> dict:
    """Extract every feature for every entity into the online store (the job's Redis).

    Args:
        warehouse_url: set only by embedded mode's inline jobs; a worker uses its own
            WAREHOUSE_URL from the environment.
    """
    job = get_current_job()
    config = Config.from_env()
    warehouse = Warehouse(warehouse_url or config.WAREHOUSE_URL)
    store = OnlineStore(job.connection)

    def on_progress(update: dict) -> None:
        job.meta["progress"] = update
        job.save_meta()

    try:
        if config.EXTRACT_PARTITIONS > 1 and warehouse_url is None:
            return _extract_partitioned(job, warehouse, store, config)
        return extract_all(REGISTRY, warehouse, store, chunk_size=config.EXTRACT_CHUNK_SIZE,
                           on_progress=on_progress)
    except FeatureStoreError as exc:
        # A clean failure (warehouse or store down): say why, and don't retry it now; retries are
        # for runs whose worker died (RQ's abandoned-job handling).
        job.meta["error"] = f"extraction failed: {exc}; the previous values are still served"
        job.retries_left = 0
        job.save_meta()
        raise
    except Exception as exc:
        log.exception("extraction failed")
        job.meta["error"] = f"extraction failed: internal error ({exc.__class__.__name__}); see the worker log"
        job.retries_left = 0
        job.save_meta()
        raise
    finally:
        warehouse.dispose()


def _extract_partitioned(job, warehouse: Warehouse, store: OnlineStore, config: Config) -> dict:
    """Run a partitioned extraction: enqueue the partitions, run the unclaimed ones here, wait
    for the rest, then remove the values of gone entities (see services/partitions.py)."""
    run = RunPartitions(job.connection, job.id, config.EXTRACT_JOB_TTL)
    plan = run.plan(lambda: {"computed_at": store.run_stamp(),
                             "ranges": partition_ranges(REGISTRY, warehouse, config.EXTRACT_PARTITIONS)})
    started = time.perf_counter()
    store.begin_run(REGISTRY.feature_types())
    queue = Queue(job.origin, connection=job.connection, serializer="json")
    for index, ranges in enumerate(plan["ranges"]):
        part_id = f"{job.id}-p{index}"
        if not Job.exists(part_id, connection=job.connection):
            queue.enqueue_call(extract_partition, kwargs={"run_id": job.id, "index": index, "ranges": ranges,
                                                          "computed_at": plan["computed_at"]},
                               job_id=part_id, timeout=config.EXTRACT_JOB_TIMEOUT, result_ttl=config.EXTRACT_JOB_TTL,
                               failure_ttl=config.EXTRACT_JOB_TTL, retry=Retry(max=2))
    registry = StartedJobRegistry(queue.name, connection=job.connection, serializer="json")
    cleanup = _Cleanup(registry)
    try:
        for index, ranges in enumerate(plan["ranges"]):
            if run.claim(index, job.id):
                _run_partition(run, index, ranges, plan["computed_at"], warehouse, store, config)
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
                    _run_partition(run, index, ranges, plan["computed_at"], warehouse, store, config)
            cleanup.maybe()
            time.sleep(0.2)
    except BaseException:
        _settle(job, run, len(plan["ranges"]), cleanup)
        raise
    removal = time.perf_counter()
    removed = store.remove_stale(REGISTRY.feature_types(), plan["computed_at"], len(plan["ranges"]),
                                 plan["computed_at"])
    counts = {f.feature_type: sum(part[f.feature_type] for part in done.values()) for f in REGISTRY}
    return {"features_extracted": counts, "total_features": sum(counts.values()), "removed": removed,
            "computed_at": format_computed_at(plan["computed_at"]), "partitions": len(plan["ranges"]),
            "stages": {"partitions": round(removal - started, 3),
                       "remove_stale": round(time.perf_counter() - removal, 3)}}


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


def extract_partition(run_id: str, index: int, ranges: dict, computed_at: int) -> dict:
    """One partition of a partitioned run (enqueued by the run's job); skipped when claimed."""
    job = get_current_job()
    config = Config.from_env()
    run = RunPartitions(job.connection, run_id, config.EXTRACT_JOB_TTL)
    if run.state()[1] or not _open(job.connection, run_id) or not run.claim(index, job.id):
        # Another partition failed, the run is over, or another job runs this partition.
        return {"skipped": True}
    warehouse = Warehouse(config.WAREHOUSE_URL)
    try:
        return _run_partition(run, index, ranges, computed_at, warehouse, OnlineStore(job.connection), config)
    except Exception:
        # A clean failure is the run's to report; only a dead worker's partition is retried.
        job.retries_left = 0  # read by RQ's failure handling in this process
        raise
    finally:
        warehouse.dispose()


def _open(connection, run_id: str) -> bool:
    """Whether the run's job may still use its partitions (queued, running, or put back)."""
    try:
        status = Job.fetch(run_id, connection=connection, serializer="json").get_status()
    except NoSuchJobError:
        return False
    return status not in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def _run_partition(run: RunPartitions, index: int, ranges: dict, computed_at: int, warehouse: Warehouse,
                   store: OnlineStore, config: Config) -> dict:
    try:
        existing = extract_values(REGISTRY, warehouse, store, computed_at=computed_at,
                                  chunk_size=config.EXTRACT_CHUNK_SIZE, stages={},
                                  id_ranges={table: tuple(bounds) for table, bounds in ranges.items()},
                                  part=index)
    except FeatureStoreError as exc:
        run.failed(index, f"partition {index}: {exc}")
        raise
    except Exception as exc:
        log.exception("partition %d failed", index)
        run.failed(index, f"partition {index}: internal error ({exc.__class__.__name__})")
        raise
    counts = {feature_type: len(ids) for feature_type, ids in existing.items()}
    run.done(index, counts)
    return counts
