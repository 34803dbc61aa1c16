"""The streaming process's loop: peek a batch, apply it, then confirm it.

Delivery is at least once: the slot is advanced only after the batch's values are in Redis. A
process killed at any point (SIGKILL included) leaves the slot where it was, and the next one
reads the unconfirmed transactions again; applying them twice writes the same values. A Redis
outage or a warehouse restart fails the batch before the slot moves: the loop waits and retries
from the same position, so nothing is lost, and it catches up at its batch size when they return.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from feature_store.errors import FeatureStoreError
from feature_store.streaming import status
from feature_store.streaming.apply import Applier
from feature_store.streaming.decoding import format_lsn
from feature_store.streaming.slot import NotStreamable, Slot

log = logging.getLogger("feature_store.streaming")

# Catch-up batches are this many times STREAM_BATCH_CHANGES: applying 60,000 changes of a backlog
# took 5.3 s in batches of 10,000 and 4.0-4.6 s in batches of 30,000-40,000, 3.8 s in one batch
# (BENCHMARKS.md, section 14); the ordinary flow's batches (a poll interval of changes) are small.
CATCH_UP_FACTOR = 4


class StreamProcess:
    """Follows `slot` and applies its changes through `applier`, reporting to `redis_client`.

    Args:
        batch_changes: most row changes read per batch (a transaction is never split).
        catch_up_changes: most row changes read per batch while a backlog waits (the previous
            read was cut by its limit); CATCH_UP_FACTOR x batch_changes by default. Larger batches
            recompute an entity changed several times once, and pay each batch's statements and
            round trips over more changes (BENCHMARKS.md, section 14); a batch's memory grows
            with it, so it stays a bounded multiple of batch_changes.
        poll_interval: seconds between reads while the slot is empty.
        retry_interval: seconds between attempts while the warehouse or Redis is out.
    """

    def __init__(self, slot: Slot, applier: Applier, redis_client, *, batch_changes: int = 10_000,
                 catch_up_changes: int | None = None, poll_interval: float = 0.1,
                 retry_interval: float = 1.0) -> None:
        self.slot = slot
        self.applier = applier
        self.redis = redis_client
        self.batch_changes = batch_changes
        self.catch_up_changes = max(batch_changes, catch_up_changes or CATCH_UP_FACTOR * batch_changes)
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self._outage: str | None = None

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set. Where the warehouse cannot stream, log why once and idle."""
        reason = self._start(stop)
        if reason is not None:
            log.warning("streaming idle: %s", reason)
            status.publish(self.redis, self.slot.name, status.IDLE, reason=reason)
            while not stop.wait(30):  # keep the report fresh for /ready, and nothing else
                status.publish(self.redis, self.slot.name, status.IDLE, reason=reason)
            return
        cut = False
        while not stop.is_set():
            try:
                cut = self.step(self.catch_up_changes if cut else self.batch_changes)
            except (FeatureStoreError, SQLAlchemyError) as exc:
                self._waiting(exc)
                stop.wait(self.retry_interval)
                continue
            if not cut:
                stop.wait(self.poll_interval)

    def _start(self, stop: threading.Event) -> str | None:
        """Check the warehouse and create the slot; the reason it cannot stream, or None."""
        while not stop.is_set():
            try:
                self.slot.check(self.applier.tables)
                if self.slot.ensure():
                    log.info("created replication slot %r (drop it when retiring this process: "
                             "flask --app wsgi features stream-slot drop)", self.slot.name)
                log.info("streaming the changes of %s through replication slot %r",
                         ", ".join(self.applier.tables), self.slot.name)
                return None
            except NotStreamable as exc:
                return str(exc)
            except (DBAPIError, SQLAlchemyError) as exc:
                self._waiting(exc)
                stop.wait(self.retry_interval)
        return None

    def step(self, max_changes: int | None = None) -> bool:
        """One batch of up to `max_changes` (batch_changes by default): read, apply, confirm.
        Returns whether the read was cut by that size (more is waiting).

        Raises:
            FeatureStoreError, SQLAlchemyError: the warehouse or Redis failed; the slot did not move.
        """
        started = time.time()
        transactions, position, cut = self.slot.peek(max_changes or self.batch_changes)
        read = time.time()
        if transactions:
            applied = self.applier.apply(transactions)
        applying = time.time()
        self.slot.advance(position)
        if transactions:
            log.info("applied %d transactions (%d changes): %d values written, %d removed%s "
                     "(read %.3fs of which decoding %.3fs, apply %.3fs, confirm %.3fs)",
                     len(transactions), sum(len(t.changes) for t in transactions), applied.written, applied.removed,
                     f"; extraction run for {', '.join(applied.refresh)}" if applied.refresh else "",
                     read - started, getattr(self.slot, "decoding_seconds", 0.0), applying - read,
                     time.time() - applying)
        if self._outage is not None:
            log.info("streaming again (after: %s)", self._outage)
            self._outage = None
        # Uncut, every change committed before this read began is in Redis now.
        fields = {"confirmed_lsn": format_lsn(position), "reason": None}
        if not cut:
            fields["caught_up_at"] = f"{started:.3f}"
        status.publish(self.redis, self.slot.name, status.STREAMING, **fields)
        return cut

    def _waiting(self, exc: Exception) -> None:
        """One log line per outage, not one per retry."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if self._outage is None:
            log.warning("streaming paused, retrying every %.0fs (nothing is confirmed until it works): %s",
                        self.retry_interval, reason)
            self._outage = reason
        status.publish(self.redis, self.slot.name, status.WAITING, reason=reason[:300])
