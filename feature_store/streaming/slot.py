"""The replication slot of the streaming process, read through PostgreSQL's SQL interface.

Why the SQL interface: psycopg 3 implements no replication protocol, and the slot functions
(`pg_logical_slot_peek_changes`, `pg_replication_slot_advance`) need nothing else. Peeking does
not consume: the process reads a batch, brings Redis up to date, and only then advances the slot
(at least once; a batch read again after a crash is applied again, which is idempotent because
values are recomputed from the warehouse, not incremented).

Why test_decoding: it is built in (no wal2json here), needs no publication (pgoutput does, and
creating one needs the tables' ownership), and its text costs about as much to parse as
pgoutput's binary messages cost to unpack in Python (BENCHMARKS.md, "Real-time updates").

A slot keeps every WAL segment from its restart position on: an abandoned slot fills the
warehouse's disk. Drop it with `flask --app wsgi features stream-slot drop` when the streaming
process is retired.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from feature_store.streaming.decoding import Transaction, format_lsn, parse_lsn, parse_rows

log = logging.getLogger("feature_store.streaming")

PLUGIN = "test_decoding"
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
_OPTIONS = "'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1'"


def _as_full(xid: int, near: int) -> int:
    """A 32-bit transaction id as the 64-bit one nearest to `near` (a snapshot's xmax): within
    2**31 of it, as PostgreSQL compares transaction ids."""
    full = (near & ~0xFFFFFFFF) | xid
    if full - near > 1 << 31:
        return full - (1 << 32)
    if near - full > 1 << 31:
        return full + (1 << 32)
    return full


class NotStreamable(Exception):
    """The warehouse cannot stream to this process; the message says why and what would fix it."""


def check_slot_name(name: str) -> str:
    if not _SLOT_NAME.fullmatch(name):
        raise ValueError(f"STREAM_SLOT {name!r}: a slot name is 1 to 63 lowercase letters, digits and underscores")
    return name


@dataclass(frozen=True)
class SlotState:
    """Where the slot stands: `confirmed_lsn` (what the process has applied), `lag_bytes` (WAL
    written since), `wal_status` (PostgreSQL's: reserved, extended, unreserved or lost)."""

    slot: str
    confirmed_lsn: str | None
    current_lsn: str
    lag_bytes: int | None
    wal_status: str | None
    active: bool

    def as_dict(self) -> dict:
        return {"slot": self.slot, "confirmed_lsn": self.confirmed_lsn, "current_lsn": self.current_lsn,
                "lag_bytes": self.lag_bytes, "wal_status": self.wal_status}


def slot_state(conn: Connection, name: str) -> SlotState | None:
    """The slot `name` of the connection's database, or None when it does not exist (any role may
    read pg_replication_slots; the web process's read-only sessions do)."""
    row = conn.execute(text(
        "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status, active "
        "FROM pg_replication_slots WHERE slot_name = :name AND database = current_database()"),
        {"name": name}).first()
    if row is None:
        return None
    return SlotState(name, row[0], row[1], None if row[2] is None else int(row[2]), row[3], bool(row[4]))


def slot_engine(url: str) -> Engine:
    """An engine for the slot's connection: autocommit (a slot cannot be created in a transaction
    that wrote), UTC (commit times), one connection checked before each use (a warehouse restart
    drops it)."""
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=1, pool_pre_ping=True,
                         connect_args={"connect_timeout": 5, "options": "-c timezone=UTC",
                                       "application_name": "feature-store-stream"})


class Slot:
    """A logical replication slot named `name` on the warehouse at `url` (PostgreSQL only)."""

    def __init__(self, url: str, name: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.name = check_slot_name(name)
        self._engine = engine
        self.decoding_seconds = 0.0
        self._block_size: int | None = None
        self._said_no_message = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = slot_engine(self.url)
        return self._engine

    def check(self, tables: Iterable[str]) -> None:
        """Make sure this warehouse can stream `tables` to this process.

        Raises:
            NotStreamable: not PostgreSQL, wal_level below logical, a role that may not use
                replication slots, or a table whose old rows are not logged in full.
            DBAPIError: the warehouse did not answer (a transient outage, not a reason to idle).
        """
        backend = make_url(self.url).get_backend_name()
        if backend != "postgresql":
            raise NotStreamable(f"the warehouse is {backend}, which has no logical decoding: values follow the "
                                "warehouse through extraction runs only")
        with self.engine.connect() as conn:
            wal_level = conn.execute(text("SHOW wal_level")).scalar_one()
            if wal_level != "logical":
                raise NotStreamable(f"the warehouse has wal_level = {wal_level}: logical decoding needs "
                                    "wal_level = logical (postgresql.conf, then a restart)")
            allowed = conn.execute(text("SELECT rolsuper OR rolreplication FROM pg_roles "
                                        "WHERE rolname = current_user")).scalar()
            if not allowed:
                raise NotStreamable("the warehouse role may not use replication slots: "
                                    "ALTER ROLE ... REPLICATION (or connect as one that may)")
            identities = dict(conn.execute(text(
                "SELECT c.relname, c.relreplident FROM pg_class c "
                "WHERE c.relname = ANY(:tables) AND c.relnamespace = to_regnamespace(current_schema())::oid"),
                {"tables": list(tables)}).all())
        not_full = sorted(t for t in tables if identities.get(t) not in ("f", None))
        if not_full:
            raise NotStreamable("the old rows of " + ", ".join(not_full) + " are not logged in full, so a change "
                                "that moves a row to another entity could not update the old one: "
                                + "; ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL" for t in not_full))

    def ensure(self) -> bool:
        """Create the slot unless it exists; True when it was created now.

        Raises:
            NotStreamable: a slot of that name exists for another plugin or another database, or
                the warehouse refused to create it (no free slot: max_replication_slots).
        """
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT plugin, database = current_database() FROM pg_replication_slots "
                                    "WHERE slot_name = :name"), {"name": self.name}).first()
            if row is not None:
                if row[0] != PLUGIN or not row[1]:
                    raise NotStreamable(f"replication slot {self.name!r} exists for "
                                        f"{'plugin ' + str(row[0]) if row[0] != PLUGIN else 'another database'}: "
                                        "choose another STREAM_SLOT")
                return False
            try:
                conn.execute(text("SELECT pg_create_logical_replication_slot(:name, :plugin)"),
                             {"name": self.name, "plugin": PLUGIN})
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == "42710":  # created meanwhile by another process
                    return False
                if getattr(exc.orig, "sqlstate", "")[:2] in ("42", "53", "55"):
                    raise NotStreamable(f"the warehouse refused to create replication slot {self.name!r}: "
                                        f"{str(exc.orig).strip().splitlines()[0]}") from exc
                raise
            return True

    def peek(self, max_changes: int) -> tuple[list[Transaction], int, bool]:
        """The committed transactions after the slot's confirmed position, without consuming them.

        Reads up to the WAL flushed when called, at a record's end (_read_up_to), and stops
        after the transaction that reaches `max_changes` rows (transactions are never split).

        Returns:
            (transactions, position to confirm once they are applied, whether the read was cut by
            `max_changes`). Uncut, the position is where the read was asked to end: every commit
            before it has been read, so confirming it lets the slot free WAL of other tables' and
            databases' traffic too.
        """
        began = time.perf_counter()
        with self.engine.connect() as conn:
            upto = self._read_up_to(conn)
            rows = conn.execute(text(
                f"SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes(:name, :upto, :n, {_OPTIONS})"),
                {"name": self.name, "upto": upto, "n": max_changes}).all()
        self.decoding_seconds = time.perf_counter() - began  # the warehouse's part of the read (the log line's)
        transactions, last = parse_rows(rows)
        cut = len(rows) >= max_changes
        position = last if cut and last is not None else max(parse_lsn(upto), last or 0)
        return transactions, position, cut

    def _read_up_to(self, conn: Connection) -> str:
        """Where a read may end: the WAL flushed now, at the end of a record.

        The WAL writer flushes whole pages, so the flushed position can cut a record written
        without a flush of its own (a page pruned by a read, a vacuum's). Decoding up to such a
        position waits for the rest of that record to be flushed: until the next commit or the WAL
        writer's next round (wal_writer_delay, longer while it hibernates on a quiet warehouse;
        12 s of a 22.5 s catch-up, BENCHMARKS.md section 14), with the changes before it held back.
        So when the flushed position is a page boundary short of what is written (a position
        inside a record is always one), an empty logical decoding message is committed in its own
        transaction, flushed before the statement returns (synchronous_commit = local, set for that
        transaction: no wait for standbys), and the read ends where the message ends: a record's
        end, flushed. test_decoding prints the message as a row of its own, which the parse skips.
        Where it cannot be committed (the function revoked from the role), the read ends at the
        flushed position, as before, and the process says so once.
        """
        flushed, inserted = conn.execute(text(
            "SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_insert_lsn()::text")).one()
        if flushed == inserted or parse_lsn(flushed) % self._wal_block_size(conn):
            return flushed
        try:
            end = conn.execute(text("SELECT set_config('synchronous_commit', 'local', true), "
                                    "pg_logical_emit_message(true, 'feature-store', '')::text")).one()[1]
            conn.commit()  # (a no-op on the slot's autocommit connection; another engine's would roll back)
            return end
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if exc.connection_invalidated or sqlstate is None or sqlstate.startswith("08"):
                raise  # the warehouse is gone: an outage, retried
            conn.rollback()
            if not self._said_no_message:
                log.warning("reads of replication slot %r end at the flushed position, which may wait for the "
                            "WAL writer (up to wal_writer_delay after a record written without a flush): the "
                            "warehouse refused the logical decoding message that ends them at a record: %s",
                            self.name, str(exc.orig).strip().splitlines()[0])
                self._said_no_message = True
            return flushed

    def _wal_block_size(self, conn: Connection) -> int:
        if self._block_size is None:
            self._block_size = int(conn.execute(text("SHOW wal_block_size")).scalar_one())
        return self._block_size

    def wait_visible(self, xids: Iterable[int], timeout: float = 10.0) -> None:
        """Wait until a new snapshot sees every transaction of `xids` (decoded ones: committed).

        A commit is in the WAL, and so decodable, a moment before new snapshots see it (the
        committing backend leaves the process array after its WAL flush, and after a synchronous
        standby's answer when there is one). A recomputation in that moment would miss the
        change it is for, and the slot would be confirmed past it: so the batch waits for a
        snapshot that sees all of it first (snapshots only see more as time goes on).

        Raises:
            DBAPIError: the warehouse failed.
        """
        wanted = {xid for xid in xids if xid is not None}
        deadline = time.monotonic() + timeout
        while wanted:
            with self.engine.connect() as conn:
                snapshot = conn.execute(text("SELECT pg_current_snapshot()::text")).scalar_one()
            xmin, xmax, running = snapshot.split(":")
            xmax64 = int(xmax)
            in_progress = {int(x) & 0xFFFFFFFF for x in running.split(",") if x}
            wanted = {xid for xid in wanted if _as_full(xid, xmax64) >= xmax64 or xid in in_progress}
            if not wanted or time.monotonic() > deadline:
                return  # (past the deadline: proceed; the next batch's recomputation corrects it)
            time.sleep(0.001)

    def advance(self, position: int) -> None:
        """Confirm every transaction up to `position`: the slot never returns them again."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_replication_slot_advance(:name, CAST(:lsn AS pg_lsn))"),
                         {"name": self.name, "lsn": format_lsn(position)})

    def state(self) -> SlotState | None:
        with self.engine.connect() as conn:
            return slot_state(conn, self.name)

    def drop(self) -> bool:
        """Drop the slot (its retained WAL is freed); False when there was none.

        Raises:
            DBAPIError: the slot is in use right now (a streaming process is reading it: stop it first).
        """
        with self.engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_replication_slots WHERE slot_name = :name "
                                       "AND database = current_database()"), {"name": self.name}).first()
            if exists is None:
                return False
            conn.execute(text("SELECT pg_drop_replication_slot(:name)"), {"name": self.name})
            return True

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
