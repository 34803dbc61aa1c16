"""Extraction runs as RQ jobs: start one or join the one in progress, and report on them."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from feature_store.errors import StoreUnavailable
from feature_store.services.run_slots import CURRENT_RUN_KEY, RunSlots

__all__ = ["CURRENT_RUN_KEY", "ExtractionRuns", "RunStatus"]

# The job function, by import path: services never import the worker package.
EXTRACT_FUNCTION = "workers.jobs.extract_features"
# The runs, newest first (a sorted set of job ids by creation time), for GET /extract.
RUNS_KEY = "feature-store:extraction:runs"
RUNS_KEPT = 100
JOB_ID_PREFIX = "extract-"
# What starts a run (start_or_join's `trigger`): a request or the CLI, the schedule, or the streaming
# process (for changes it cannot follow row by row: a TRUNCATE, a table with no path to the entity).
TRIGGERS = ("api", "schedule", "stream")

ACTIVE = {JobStatus.CREATED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED,
          JobStatus.SCHEDULED, JobStatus.READY_TO_ENQUEUE, JobStatus.RATE_LIMITED}
# RQ's statuses, as the contract names them.
_CONTRACT_STATUS = {
    JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "failed",
    JobStatus.CANCELED: "failed",
    JobStatus.STARTED: "started",
}
# A run whose creator died between claiming the slot and enqueueing stops blocking after this.
_CREATED_GRACE_SECONDS = 30
_STORE_DOWN = "the online store (Redis) is unreachable or not answering"


@dataclass(frozen=True)
class RunStatus:
    """What GET /extract/<job_id> reports about one extraction run."""

    job_id: str
    status: str  # queued | started | finished | failed
    trigger: str
    feature_types: list[str]
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    result: dict | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed")

    def as_dict(self) -> dict:
        body = {"job_id": self.job_id, "status": self.status, "trigger": self.trigger,
                "feature_types": self.feature_types, "enqueued_at": self.enqueued_at,
                "started_at": self.started_at, "ended_at": self.ended_at}
        if self.status == "failed":
            result = self.result or {}
            body.update(success=False, error=self.error, failed_features=result.get("failed_features", {}),
                        features_extracted=result.get("features_extracted", {}),
                        total_features=result.get("total_features", 0))
        if self.result is not None:
            body["result"] = self.result
        return body

    def summary(self) -> dict:
        """The run as GET /extract lists it."""
        body = {"job_id": self.job_id, "status": self.status, "trigger": self.trigger,
                "feature_types": self.feature_types, "enqueued_at": self.enqueued_at,
                "started_at": self.started_at, "ended_at": self.ended_at}
        if self.done:
            result = self.result or {}
            body.update(features_extracted=result.get("features_extracted", {}),
                        total_features=result.get("total_features", 0),
                        failed_features=result.get("failed_features", {}))
            if self.error is not None:
                body["error"] = self.error
        return body


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat()


class ExtractionRuns:
    """Starts, joins and reports extraction runs on one RQ queue.

    Args:
        connection: the Redis holding the queue (the online store's Redis).
        feature_types: every declared feature type (a run of all of them is a full run).
        is_async: False runs jobs inline in this process (embedded mode).
        warehouse_url: passed to inline jobs only; real workers read their own WAREHOUSE_URL so
            credentials are never written into job data.
    """

    def __init__(self, connection: redis.Redis, *, queue_name: str, is_async: bool, job_timeout: int,
                 job_ttl: int, feature_types: list[str], retries: int = 2, warehouse_url: str | None = None) -> None:
        self.redis = connection
        self.queue = Queue(queue_name, connection=connection, is_async=is_async, serializer="json")
        self.is_async = is_async
        self.job_timeout = job_timeout
        self.job_ttl = job_ttl
        self.retries = retries
        self.feature_types = list(feature_types)
        self.warehouse_url = warehouse_url if not is_async else None
        self.slots = RunSlots(connection, job_ttl)

    def start_or_join(self, feature_types: list[str] | None = None, *, trigger: str = "api") -> tuple[str, bool]:
        """The job id of a run that will refresh `feature_types` (None: every feature), and
        whether it is a run in progress that this call joined (see run_slots.py for the rule).

        Check-and-enqueue is atomic: a slot is claimed with SET NX (or a script), so concurrent
        callers get one run between them. A slot whose job ended, vanished or was abandoned is
        freed, and the run waiting behind it promoted.

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        if feature_types is not None and set(feature_types) >= set(self.feature_types):
            feature_types = None
        try:
            for attempt in range(20):
                current = self.settle()
                if current is None:
                    job_id = self._create(feature_types, trigger, after=None)
                    if job_id is not None:
                        return job_id, False
                    continue
                if self.slots.join(current, feature_types):
                    return current, True
                waiting = self.slots.waiting()
                if waiting is not None and not self.is_active(waiting):
                    self.slots.release(waiting)
                    continue
                if waiting is None:
                    job_id = self._create(feature_types, trigger, after=current)
                    if job_id is not None:
                        return job_id, False
                    continue
                if self.slots.join(waiting, feature_types):
                    return waiting, True
                time.sleep(0.01 * attempt)  # the waiting run is starting: it becomes current
        except redis.RedisError as exc:
            raise StoreUnavailable(_STORE_DOWN) from exc
        raise StoreUnavailable("could not claim the extraction slot; try again")

    def settle(self) -> str | None:
        """The current run, after freeing a slot whose run is over (promoting the run waiting
        behind it) and enqueueing a promoted run that its promoter did not get to enqueue."""
        for _ in range(10):
            current = self.slots.current()
            if current is None:
                return None
            try:
                job = Job.fetch(current, connection=self.redis, serializer="json")
            except NoSuchJobError:
                job = None
            if job is not None and job.get_status(refresh=False) == JobStatus.CREATED and job.meta.get("after"):
                promote_run(self.slots, self.queue, None, promoted=current)  # enqueued once
                return current
            if job is not None and run_is_active(self.redis, current):
                return current
            promote_run(self.slots, self.queue, current)
        return self.slots.current()

    def _create(self, feature_types: list[str] | None, trigger: str, *, after: str | None) -> str | None:
        """Create a run and claim its slot: current (then enqueue it), or next behind `after`
        (enqueued when promoted). None when another caller claimed the slot first."""
        job = self.queue.create_job(
            EXTRACT_FUNCTION,
            status=JobStatus.CREATED,  # not "queued" until it really is (see is_active)
            kwargs={"warehouse_url": self.warehouse_url} if self.warehouse_url else {},
            job_id=f"{JOB_ID_PREFIX}{uuid.uuid4().hex}",
            timeout=self.job_timeout,
            result_ttl=self.job_ttl,
            failure_ttl=self.job_ttl,
            retry=Retry(max=self.retries) if self.retries else None,
            meta={"trigger": trigger, "after": after},
            description="feature extraction: " + (", ".join(feature_types) if feature_types else "every feature"),
        )
        job.save()
        self.slots.create_record(job.id, feature_types)
        try:
            claimed = self.slots.claim_current(job.id) if after is None else self.slots.claim_next(job.id, after)
            if not claimed:
                job.delete()
                return None
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(RUNS_KEY, {job.id: time.time()})
                pipe.zremrangebyrank(RUNS_KEY, 0, -(RUNS_KEPT + 1))
                pipe.expire(RUNS_KEY, self.job_ttl)
                pipe.execute()
            if after is None:
                self.queue.enqueue_job(job)
        except redis.RedisError:
            # Never leave a slot pointing at a job no worker will see.
            self._forget(job)
            raise
        return job.id

    def _forget(self, job: Job) -> None:
        try:
            self.slots.release(job.id)
            job.delete()
        except redis.RedisError:
            pass  # the slot then frees itself: a job still "created" after the grace period is ignored

    def is_active(self, job_id: str) -> bool:
        """Whether the run is queued, running, or waiting to be retried."""
        return run_is_active(self.redis, job_id)

    def status(self, job_id: str) -> RunStatus | None:
        """The run's status, or None when no extraction job has that id (or it expired).

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        if not job_id.startswith(JOB_ID_PREFIX) or not all(c.isalnum() or c in "-_" for c in job_id) \
                or not job_id.isascii() or len(job_id) > 100:
            return None
        try:
            try:
                job = Job.fetch(job_id, connection=self.redis, serializer="json")
            except NoSuchJobError:
                return None
            return self._status(job, self.slots.features([job_id])[0])
        except redis.RedisError as exc:
            raise StoreUnavailable(_STORE_DOWN) from exc

    def _status(self, job: Job, feature_types: list[str] | None) -> RunStatus | None:
        if job.func_name != EXTRACT_FUNCTION:
            return None
        rq_status = job.get_status(refresh=False)
        meta = job.meta
        status = _CONTRACT_STATUS.get(rq_status, "queued")
        started_at = meta.get("started_at") or _iso(job.started_at)
        if status not in ("finished", "failed"):
            # Started once its features are sealed (RQ says "started" a moment before; an inline
            # job never says it); until then it takes in the features of requests that join it.
            started = meta.get("started_at") and not meta.get("waiting_for")
            status = "started" if started else "queued"
            started_at = started_at if started else None
        ended_at = _iso(job.ended_at)
        result = error = None
        if status == "finished":
            result = job.return_value()
        elif status == "failed":
            result = meta.get("result")
            error = meta.get("error") or "the extraction job failed (its worker died or it was stopped)"
            if ended_at is None:  # failed without a worker (inline, or abandoned): RQ sets no ended_at
                latest = job.latest_result()
                ended_at = _iso(latest.created_at) if latest is not None else None
        return RunStatus(job.id, status, meta.get("trigger", "api"),
                         feature_types if feature_types is not None else self.feature_types,
                         _iso(job.enqueued_at) or _iso(job.created_at), started_at, ended_at, result, error)

    def runs(self, limit: int) -> list[RunStatus]:
        """The last `limit` runs still kept, newest first.

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        try:
            ids = [i.decode() for i in self.redis.zrevrange(RUNS_KEY, 0, limit - 1)]
            jobs = Job.fetch_many(ids, connection=self.redis, serializer="json") if ids else []
            features = self.slots.features(ids) if ids else []
            gone = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
            if gone:
                self.redis.zrem(RUNS_KEY, *gone)
            statuses = [self._status(job, ft) for job, ft in zip(jobs, features, strict=True) if job is not None]
        except redis.RedisError as exc:
            raise StoreUnavailable(_STORE_DOWN) from exc
        return [status for status in statuses if status is not None]

    def listening_workers(self) -> int | None:
        """How many RQ workers listen on the extraction queue (None in embedded mode, where runs
        are inline). A worker killed without warning counts until its registration expires.

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        if not self.is_async:
            return None
        try:
            names = self.redis.smembers(WORKERS_BY_QUEUE_KEY % self.queue.name)
            if not names:
                return 0
            with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.exists(name)
                return sum(pipe.execute())
        except redis.RedisError as exc:
            raise StoreUnavailable(_STORE_DOWN) from exc

    def wait(self, job_id: str, timeout: float, poll: float = 0.05) -> RunStatus | None:
        """The run's status once it is done, or as it stands when `timeout` seconds have passed.
        A run waiting behind one that is over (its worker died, say) is promoted meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status is None or status.done or time.monotonic() >= deadline:
                return status
            if status.status == "queued":
                try:
                    self.settle()
                except redis.RedisError as exc:
                    raise StoreUnavailable(_STORE_DOWN) from exc
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            poll = min(poll * 1.5, 0.5)


def promote_run(slots: RunSlots, queue: Queue, ended: str | None, *, promoted: str | None = None) -> None:
    """Run `ended` is over: the run waiting behind it becomes current and is enqueued (once,
    whoever calls this: see run_slots.py). With `promoted`, only make sure that run is enqueued.
    On a queue that runs jobs inline (embedded mode), the promoted run runs in a thread of its own."""
    if ended is not None:
        promoted = slots.promote(ended)
    if promoted is None or not slots.claim_enqueue(promoted, time.time(), _CREATED_GRACE_SECONDS):
        return
    try:
        job = Job.fetch(promoted, connection=queue.connection, serializer="json")
    except NoSuchJobError:
        return
    if job.get_status(refresh=False) != JobStatus.CREATED:
        return
    if queue.is_async:
        queue.enqueue_job(job)
    else:
        threading.Thread(target=queue.enqueue_job, args=(job,), name=f"run-{promoted}", daemon=True).start()


def run_is_active(connection: redis.Redis, job_id: str) -> bool:
    """Whether the run `job_id` is queued, running, waiting behind another run, or waiting to be
    retried (a run whose creator died before enqueueing it stops counting after a grace period)."""
    try:
        job = Job.fetch(job_id, connection=connection, serializer="json")
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status == JobStatus.CREATED and job.meta.get("after"):
        return True  # waits behind another run: enqueued when promoted (run_slots.py)
    if status == JobStatus.CREATED:
        created = job.created_at
        if created is None:
            return False
        return (datetime.now(UTC) - _aware(created)).total_seconds() < _CREATED_GRACE_SECONDS
    return status in ACTIVE


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
