"""Extraction runs as RQ jobs: start one or join the one in progress, and report on them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from feature_store.errors import StoreUnavailable

# The job function, by import path: services never import the worker package.
EXTRACT_FUNCTION = "workers.jobs.extract_features"
# Holds the id of the extraction run in progress, so a second request joins it.
CURRENT_RUN_KEY = "feature-store:extraction:current"
JOB_ID_PREFIX = "extract-"

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

_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RunStatus:
    """What GET /extract/<job_id> reports about one extraction run."""

    job_id: str
    status: str  # queued | started | finished | failed
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    result: dict | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed")

    def as_dict(self) -> dict:
        body = {"job_id": self.job_id, "status": self.status, "enqueued_at": self.enqueued_at,
                "started_at": self.started_at, "ended_at": self.ended_at}
        if self.result is not None:
            body["result"] = self.result
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
        is_async: False runs jobs inline in this process (embedded mode).
        warehouse_url: passed to inline jobs only; real workers read their own WAREHOUSE_URL so
            credentials are never written into job data.
    """

    def __init__(self, connection: redis.Redis, *, queue_name: str, is_async: bool, job_timeout: int,
                 job_ttl: int, retries: int = 2, warehouse_url: str | None = None) -> None:
        self.redis = connection
        self.queue = Queue(queue_name, connection=connection, is_async=is_async, serializer="json")
        self.job_timeout = job_timeout
        self.job_ttl = job_ttl
        self.retries = retries
        self.warehouse_url = warehouse_url if not is_async else None
        self._release = connection.register_script(_RELEASE_IF_OWNER)

    def start_or_join(self) -> tuple[str, bool]:
        """The job id of the run in progress (joined=True) or of a new one (joined=False).

        Check-and-enqueue is atomic: the run's slot is claimed with SET NX, so concurrent callers
        get one run between them. A slot whose job ended, vanished or was abandoned is freed.

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        try:
            for _ in range(10):
                current = self.redis.get(CURRENT_RUN_KEY)
                if current is not None:
                    current = current.decode()
                    if self._is_active(current):
                        return current, True
                    self._release(keys=[CURRENT_RUN_KEY], args=[current])
                    continue
                job = self.queue.create_job(
                    EXTRACT_FUNCTION,
                    status=JobStatus.CREATED,  # not "queued" until it really is (see _is_active)
                    kwargs={"warehouse_url": self.warehouse_url} if self.warehouse_url else {},
                    job_id=f"{JOB_ID_PREFIX}{uuid.uuid4().hex}",
                    timeout=self.job_timeout,
                    result_ttl=self.job_ttl,
                    failure_ttl=self.job_ttl,
                    retry=Retry(max=self.retries) if self.retries else None,
                    description="feature extraction: every feature, every entity",
                )
                job.save()
                try:
                    claimed = self.redis.set(CURRENT_RUN_KEY, job.id, nx=True, ex=self.job_ttl)
                    if claimed:
                        self.queue.enqueue_job(job)
                        return job.id, False
                except redis.RedisError:
                    # Never leave the slot pointing at a job no worker will see.
                    self._forget(job)
                    raise
                job.delete()
        except redis.RedisError as exc:
            raise StoreUnavailable("the online store (Redis) is unreachable or not answering") from exc
        raise StoreUnavailable("could not claim the extraction slot; try again")

    def _forget(self, job: Job) -> None:
        try:
            self._release(keys=[CURRENT_RUN_KEY], args=[job.id])
            job.delete()
        except redis.RedisError:
            pass  # the slot then frees itself: a job still "created" after the grace period is ignored

    def _is_active(self, job_id: str) -> bool:
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer="json")
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.CREATED:
            created = job.created_at
            if created is None:
                return False
            return (datetime.now(UTC) - _aware(created)).total_seconds() < _CREATED_GRACE_SECONDS
        return status in ACTIVE

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
            if job.func_name != EXTRACT_FUNCTION:
                return None
            rq_status = job.get_status(refresh=False)
            status = _CONTRACT_STATUS.get(rq_status, "queued")
            result = job.return_value() if status == "finished" else None
            error = None
            if status == "failed":
                error = job.meta.get("error") or "the extraction job failed (its worker died or it was stopped)"
            return RunStatus(job.id, status, _iso(job.enqueued_at), _iso(job.started_at), _iso(job.ended_at),
                             result, error)
        except redis.RedisError as exc:
            raise StoreUnavailable("the online store (Redis) is unreachable or not answering") from exc

    def wait(self, job_id: str, timeout: float, poll: float = 0.05) -> RunStatus | None:
        """The run's status once it is done, or as it stands when `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status is None or status.done or time.monotonic() >= deadline:
                return status
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            poll = min(poll * 1.5, 0.5)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
