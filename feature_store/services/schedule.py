"""Scheduled extraction (EXTRACT_SCHEDULE): the due times, and at most one run per due time
however many schedulers run.

Why not RQ's own CronScheduler (`rq cron`): it reads cron fields in the host's local time (the
contract says UTC), starts interval schedules whenever each process starts (so two processes
disagree on the due times), takes no lock (two schedulers enqueue every due job twice), and
enqueues its function directly, bypassing the join of a run in progress. Here every scheduler
computes the same due times (cron in UTC, intervals on multiples of their length since the
epoch), and the one that claims a due time in Redis (SET NX) starts the run, or joins the run in
progress, like any other request.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from croniter import croniter

from feature_store.errors import FeatureStoreError
from feature_store.services.jobs import ExtractionRuns

log = logging.getLogger(__name__)

DUE_KEY = "feature-store:schedule:due:{due}"
_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Schedule:
    """A cron expression (5 fields, UTC) or an interval in whole seconds."""

    cron: str | None = None
    interval: int | None = None

    @classmethod
    def parse(cls, spec: str | None) -> Schedule | None:
        """The schedule `spec` names; None when it is unset or blank.

        Raises:
            ValueError: `spec` is neither a 5-field cron expression nor a whole number of seconds.
        """
        if spec is None or not spec.strip():
            return None
        spec = spec.strip()
        if re.fullmatch(r"[0-9]+", spec):
            if int(spec) < 1:
                raise ValueError("EXTRACT_SCHEDULE: an interval must be at least 1 second")
            return cls(interval=int(spec))
        if len(spec.split()) != 5 or not croniter.is_valid(spec):
            raise ValueError(f"EXTRACT_SCHEDULE must be a 5-field cron expression (UTC, e.g. '0 3 * * *') or a "
                             f"whole number of seconds; got {spec!r}")
        return cls(cron=" ".join(spec.split()))

    def next_due(self, after: float) -> float:
        """The first due time strictly after `after` (seconds since the epoch)."""
        if self.interval is not None:
            return (math.floor(after / self.interval) + 1) * self.interval
        return croniter(self.cron, datetime.fromtimestamp(after, tz=UTC)).get_next(float)

    def describe(self) -> str:
        return f"every {self.interval} s" if self.interval is not None else f"cron '{self.cron}' (UTC)"

    def claim_ttl(self) -> int:
        """How long a due time's claim is kept: well past any clock skew between schedulers."""
        return max(300, 2 * self.interval) if self.interval is not None else 3600


class Scheduler:
    """Starts (or joins) an extraction run at each due time of `schedule` that it claims."""

    def __init__(self, runs: ExtractionRuns, schedule: Schedule, *, name: str | None = None) -> None:
        self.runs = runs
        self.schedule = schedule
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._release = runs.redis.register_script(_RELEASE_IF_OWNER)

    def fire(self, due: float) -> tuple[str, bool] | None:
        """Claim due time `due`; if this scheduler got it, start or join a run of every feature.
        Returns (job id, joined), or None when another scheduler claimed it."""
        key = DUE_KEY.format(due=int(due))
        if not self.runs.redis.set(key, self.name, nx=True, ex=self.schedule.claim_ttl()):
            log.info("due time %s: claimed by another scheduler", _iso(due))
            return None
        try:
            job_id, joined = self.runs.start_or_join(None, trigger="schedule")
        except Exception:
            # Give the due time back (another scheduler, or this one's next try, may take it).
            self._release(keys=[key], args=[self.name])
            raise
        self.runs.redis.set(key, job_id, xx=True, keepttl=True)
        workers = self.runs.listening_workers()
        log.info("due time %s: %s run %s%s", _iso(due), "joined" if joined else "started", job_id,
                 f"; no worker listens on queue {self.runs.queue.name!r}: it stays queued until one does"
                 if workers == 0 else "")
        return job_id, joined

    def run(self, stop: threading.Event) -> None:
        """Fire at every due time until `stop` is set. A due time that passes while Redis is
        unreachable is skipped (logged); missed due times are not caught up."""
        log.info("scheduler %s: extraction %s", self.name, self.schedule.describe())
        due = self.schedule.next_due(time.time())
        while not stop.is_set():
            remaining = due - time.time()
            if remaining > 0:
                stop.wait(min(remaining, 60))
                continue
            for attempt in range(3):
                try:
                    self.fire(due)
                    break
                except (redis.RedisError, FeatureStoreError) as exc:
                    if attempt == 2 or stop.wait(1):
                        log.warning("due time %s skipped: %s", _iso(due), exc)
                        break
            due = self.schedule.next_due(max(due, time.time()))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None).isoformat()


def start_in_thread(runs: ExtractionRuns, schedule: Schedule) -> threading.Event:
    """Embedded mode: keep the schedule in a daemon thread of this process. Set the returned
    event to stop it."""
    stop = threading.Event()
    threading.Thread(target=Scheduler(runs, schedule).run, args=(stop,), name="extraction-schedule",
                     daemon=True).start()
    return stop
