"""Read access to the warehouse: set-based feature queries, streamed or for a set of ids."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import BigInteger, and_, any_, bindparam, create_engine, text, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from feature_store.errors import WarehouseDataError, WarehouseUnavailable
from feature_store.registry import Feature
from feature_store.warehouse.models import SQLITE_INSTANT_FUNCTION, sqlite_instant_text
from feature_store.warehouse.statements import Current, as_of_query, event_times_query, spine_params

log = logging.getLogger(__name__)

T = TypeVar("T")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Largest id list bound into one IN (...): SQLite allows 32,766 host parameters.
MAX_IDS_PER_QUERY = 30_000


def _engine(url: str, *, statement_timeout_ms: int | None) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise ValueError("WAREHOUSE_URL must name a SQLite file; an in-memory database is empty")
        path = Path(database)

        # Read-only and never created: a mistyped path must fail, not serve an empty warehouse.
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=5
            )
            # The timestamp forms SQL cannot normalize are read by the same rules as values are.
            conn.create_function(SQLITE_INSTANT_FUNCTION, 1, sqlite_instant_text, deterministic=True)
            return conn

        # One short-lived connection per use: each query sees the live file.
        return create_engine("sqlite://", creator=connect, poolclass=NullPool)
    if parsed.get_backend_name() == "postgresql":
        # UTC sessions: instants are bound without a zone, and a timestamptz column must compare
        # with them in UTC whatever the server's time zone.
        options = "-c default_transaction_read_only=on -c timezone=UTC"
        if statement_timeout_ms:
            options += f" -c statement_timeout={statement_timeout_ms}"
        # libpq's minimum connect_timeout is 2 s; the request path's deadline is enforced by
        # Warehouse.compute instead.
        return create_engine(
            url,
            connect_args={"connect_timeout": 2, "options": options, "application_name": "feature-store"},
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=4,
        )
    return create_engine(url, pool_pre_ping=True)


class Warehouse:
    """The warehouse behind `url`, read through SQLAlchemy. Connects lazily, on first use.

    Two engines: one for the request path (short statement timeout, bounded by a deadline), one
    for batch extraction (long streaming queries).
    """

    def __init__(self, url: str, *, request_timeout: float = 1.0) -> None:
        self.url = url
        self.request_timeout = request_timeout
        self._request_engine: Engine | None = None
        self._batch_engine: Engine | None = None
        # Request-path queries run here so a stuck warehouse costs a request its deadline only.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="warehouse")
        self._as_of_queries: dict = {}
        self._marker_conn: sqlite3.Connection | None = None  # change_marker()'s, on SQLite
        self._marker_lock = threading.Lock()
        self._marker_file: os.stat_result | None = None

    @property
    def request_engine(self) -> Engine:
        if self._request_engine is None:
            timeout_ms = max(int(self.request_timeout * 1000) * 5, 1000)
            self._request_engine = _engine(self.url, statement_timeout_ms=timeout_ms)
        return self._request_engine

    @property
    def batch_engine(self) -> Engine:
        if self._batch_engine is None:
            self._batch_engine = _engine(self.url, statement_timeout_ms=None)
        return self._batch_engine

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    def compute(self, feature: Feature, entity_ids: Iterable[int], *, batch: bool = False) -> dict[int, bytes]:
        """The encoded value of `feature` for each of `entity_ids` that exists.

        One query for the whole set (split only past MAX_IDS_PER_QUERY ids), run under the
        request deadline; with `batch` (the streaming process's recomputations), on the batch
        engine without it.

        Raises:
            WarehouseUnavailable: the warehouse did not answer within the deadline, or failed.
        """
        return self.compute_at(feature, entity_ids, batch=batch)[0]

    def compute_at(self, feature: Feature, entity_ids: Iterable[int], *,
                   batch: bool = False) -> tuple[dict[int, bytes], bytes | None]:
        """compute(), with the warehouse position the values were read at (see position()).

        Raises:
            WarehouseUnavailable: as compute().
        """
        ids = sorted(set(entity_ids))
        if not ids:
            return {}, None
        if batch:
            return self._compute(feature, ids, batch=True)
        future = self._executor.submit(self._compute, feature, ids)
        try:
            return future.result(timeout=self.request_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WarehouseUnavailable("the warehouse did not answer in time") from None

    def _compute(self, feature: Feature, ids: list[int], *, batch: bool = False
                 ) -> tuple[dict[int, bytes], bytes | None]:
        values: dict[int, bytes] = {}
        try:
            with (self.batch_engine if batch else self.request_engine).connect() as conn:
                at = position(conn)
                # A batch's thousands of ids as one array parameter on PostgreSQL: expanding them
                # into an IN list cost more than the statement itself (BENCHMARKS.md, section 14).
                as_array = batch and conn.dialect.name == "postgresql"
                for start in range(0, len(ids), MAX_IDS_PER_QUERY):
                    chunk = ids[start:start + MAX_IDS_PER_QUERY]
                    restrict = ((lambda col, chunk=chunk: col == any_(bindparam("ids", chunk, type_=ARRAY(BigInteger))))
                                if as_array else (lambda col, chunk=chunk: col.in_(chunk)))
                    rows = conn.execute(feature.query(Current(restrict)))
                    for entity_id, *inputs in rows:
                        values[entity_id] = feature.encode(inputs)
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _unreadable(feature, exc) from exc
        return values, at

    def compute_as_of(self, feature: Feature, items: Sequence[tuple[int, int, datetime]]) -> dict[int, bytes]:
        """The encoded value of `feature` at each spine item (position, entity id, naive UTC
        instant) whose entity existed at its instant, keyed by position.

        One statement for all of them, whatever their instants, run under the request deadline.

        Raises:
            WarehouseUnavailable: the warehouse did not answer within the deadline, or failed.
            WarehouseDataError: a row the feature reads cannot be read.
        """
        return self.compute_as_of_all([(feature, items)])[0]

    def compute_as_of_all(self, work: Sequence[tuple[Feature, Sequence[tuple[int, int, datetime]]]]
                          ) -> list[dict[int, bytes]]:
        """compute_as_of() for several features at once: their statements run side by side (the
        database does the work), all under one request deadline."""
        futures = [self._executor.submit(self._compute_as_of, feature, items) if items else None
                   for feature, items in work]
        deadline = time.monotonic() + self.request_timeout
        try:
            return [future.result(timeout=max(0.0, deadline - time.monotonic())) if future is not None else {}
                    for future in futures]
        except concurrent.futures.TimeoutError:
            for future in futures:
                if future is not None:
                    future.cancel()
            raise WarehouseUnavailable("the warehouse did not answer in time") from None

    def batch_as_of(self, feature: Feature, items: Sequence[tuple[int, int, datetime]]) -> dict[int, bytes]:
        """compute_as_of() for a training set's chunk: on the batch engine, without the request
        deadline (a chunk of a large spine takes longer than an inference request may)."""
        return self._compute_as_of(feature, items, batch=True) if items else {}

    def _compute_as_of(self, feature: Feature, items: Sequence[tuple[int, int, datetime]], *,
                       batch: bool = False) -> dict[int, bytes]:
        try:
            with (self.batch_engine if batch else self.request_engine).connect() as conn:
                statement, compiled = self._as_of_query(feature, conn)
                params = spine_params(conn.dialect.name, items)
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(_AS_OF_PLAN)
                # Read from the driver's cursor, encoded a chunk at a time (as batch extraction is).
                raw = _raw_rows(conn, statement, 1 << 30, values=params, named=False, compiled=compiled)
                if raw is None:
                    return {pos: feature.encode(inputs) for pos, *inputs in conn.execute(statement, params)}
                encode = feature.rows_encoder()
                return dict(pair for rows in raw for pair in encode(rows))
        except (SQLAlchemyError, _DriverError) as exc:
            raise _unavailable(exc) from exc
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _unreadable(feature, exc) from exc

    def _as_of_query(self, feature: Feature, conn: Connection):
        """`feature`'s as-of statement and its compiled form: the same for every spine (its rows
        are parameters), so built and compiled once per feature (2-3 ms of Python each time, a
        tenth of a 1,000-row training set)."""
        key = (feature, conn.dialect.name)
        cached = self._as_of_queries.get(key)
        if cached is None:
            statement = as_of_query(feature, conn.dialect.name)
            compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            cached = self._as_of_queries[key] = (statement, compiled)
        return cached

    def stream(self, feature: Feature, *, chunk_size: int, id_range: tuple[int | None, int | None] | None = None,
               timings: dict[str, float] | None = None,
               on_position: Callable[[bytes | None], None] | None = None) -> Iterator[list[tuple[int, bytes]]]:
        """Every entity's encoded value of `feature`, in chunks of `chunk_size` rows.

        One set-based query over the whole table (or the id range [lo, hi); None: unbounded on
        that side), streamed with a server-side cursor where the dialect has one, so memory stays
        flat whatever the size.

        With `timings`, the seconds spent encoding values are added to its "encode". With
        `on_position`, it is called with the warehouse position of the query's read (position())
        before the first chunk.

        Raises:
            WarehouseUnavailable: the query could not run or broke off.
        """
        restrict = None
        if id_range is not None:
            lo, hi = id_range
            restrict = lambda col: and_(*([col >= lo] if lo is not None else []),  # noqa: E731
                                        *([col < hi] if hi is not None else []), true())
        statement = feature.query(Current(restrict))
        encode = feature.rows_encoder()
        if timings is not None:
            encode_rows = encode

            def encode(rows):
                started = time.perf_counter()
                try:
                    return encode_rows(rows)
                finally:
                    timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - started
        try:
            with self.batch_engine.connect() as conn:
                if on_position is not None:
                    on_position(position(conn))  # in the query's transaction, before its snapshot
                raw = _raw_rows(conn, statement, chunk_size) if conn.dialect.name in _RAW_DIALECTS else None
                if raw is not None:
                    for rows in raw:
                        yield encode(rows)
                    return
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(_PLAN_FOR_EVERY_ROW % _BATCH_CURSOR_TUPLE_FRACTION)
                result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(statement)
                for rows in result.partitions(chunk_size):
                    yield encode(rows)
        except (SQLAlchemyError, _DriverError) as exc:
            raise _query_failed(f"the query of {feature.feature_type}", exc) from exc
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _unreadable(feature, exc) from exc

    def event_times(self, feature: Feature) -> Iterator[list[tuple[int, datetime]]] | None:
        """Every (entity id, naive UTC instant) at which `feature`'s value of an entity can change
        (statements.event_times_query), in chunks of rows as the cursor reads them, or None when
        they are not derived for its statement.

        Raises (while iterating):
            WarehouseUnavailable, WarehouseDataError.
        """
        statement = event_times_query(feature)
        if statement is None:
            return None

        def rows() -> Iterator[list[tuple[int, datetime]]]:
            try:
                with self.batch_engine.connect() as conn:
                    result = conn.execution_options(stream_results=True, yield_per=50_000).execute(statement)
                    for part in result.partitions(50_000):
                        yield [(entity_id, at) for entity_id, at in part if at is not None]
            except SQLAlchemyError as exc:
                raise _query_failed(f"the event times of {feature.feature_type}", exc) from exc
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise _unreadable(feature, exc) from exc

        return rows()

    def change_marker(self) -> bytes | None:
        """A reading that differs whenever a change was committed to the warehouse since the last
        one (what was read from it between two equal readings still holds), or None where there
        is none (an in-memory SQLite database; a warehouse that does not answer).

        PostgreSQL: the cluster's WAL insert position (a standby: replayed), which every commit
        passes before it is visible (anything else written to the WAL moves it too: a needless
        rebuild, never a missed change; UNLOGGED tables write none); comparable between
        processes. SQLite: PRAGMA data_version of a connection of this process's own, which
        changes with every commit by any other connection, with the file's identity (a file put
        in its place is another warehouse); it counts from that connection's opening, so it
        compares only within this process (`shared_change_marker` is false).
        """
        if self.dialect == "postgresql":
            try:
                return self.read(lambda conn: b"%s:%s" % tuple(
                    str(v).encode() for v in conn.exec_driver_sql(_CHANGE_MARKER).one()))
            except WarehouseUnavailable:
                return None
        database = make_url(self.url).database
        if self.dialect != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
            return None
        with self._marker_lock:
            try:
                if self._marker_conn is None:
                    self._marker_conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
                    self._marker_file = os.stat(database)
                version = self._marker_conn.execute("PRAGMA data_version").fetchone()[0]
                now = os.stat(database)
            except (sqlite3.Error, OSError):
                return None
        opened = self._marker_file
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return None  # replaced: this connection reads the old file (the next Warehouse reads the new one)
        return b"sqlite:%d:%d:%d:%d" % (os.getpid(), now.st_dev, now.st_ino, version)

    @property
    def shared_change_marker(self) -> bool:
        """Whether change_marker() readings of different processes compare (PostgreSQL's do)."""
        return self.dialect == "postgresql"

    def select_ids(self, statements: Sequence[tuple[object, dict]]) -> list[set[int]]:
        """The ids each (statement, parameters) selects (its first column), on the batch engine:
        the streaming process's lookups of the entities a changed row reaches (lineage routes).

        Raises:
            WarehouseUnavailable: the warehouse failed.
        """
        try:
            with self.batch_engine.connect() as conn:
                return [{row[0] for row in conn.execute(statement, params)} for statement, params in statements]
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc

    def id_bounds(self, table: str) -> tuple[int, int] | None:
        """(smallest, largest) id of `table` (a declared entity table), or None when it is empty."""
        try:
            with self.batch_engine.connect() as conn:
                low, high = conn.execute(text(f"SELECT MIN(id), MAX(id) FROM {_table(table)}")).one()
        except SQLAlchemyError as exc:
            raise _query_failed(f"to read the ids of {table}", exc) from exc
        return None if low is None else (int(low), int(high))

    def read(self, read: Callable[[Connection], T]) -> T:
        """`read(connection)` on the request engine, under the request deadline (a probe's or a
        scrape's look at the warehouse: its replication slot).

        Raises:
            WarehouseUnavailable: the warehouse did not answer within the deadline, or failed.
        """
        def run() -> T:
            try:
                with self.request_engine.connect() as conn:
                    return read(conn)
            except SQLAlchemyError as exc:
                raise _unavailable(exc) from exc

        future = self._executor.submit(run)
        try:
            return future.result(timeout=self.request_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WarehouseUnavailable("the warehouse did not answer in time") from None

    def ping(self, *, batch: bool = False) -> None:
        """Check that the warehouse answers a trivial query (the request path's deadline applies
        unless `batch`).

        Raises:
            WarehouseUnavailable: it does not.
        """
        def ping() -> None:
            try:
                with (self.batch_engine if batch else self.request_engine).connect() as conn:
                    conn.execute(text("SELECT 1"))
            except SQLAlchemyError as exc:
                raise _unavailable(exc) from exc

        if batch:
            return ping()
        future = self._executor.submit(ping)
        try:
            return future.result(timeout=self.request_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WarehouseUnavailable("the warehouse did not answer in time") from None

    def dispose(self) -> None:
        with self._marker_lock:
            if self._marker_conn is not None:
                self._marker_conn.close()
                self._marker_conn = None
        for engine in (self._request_engine, self._batch_engine):
            if engine is not None:
                engine.dispose()
        self._executor.shutdown(wait=False, cancel_futures=True)


# Dialects whose batch queries are read straight from the DBAPI cursor (a server-side cursor on
# PostgreSQL): SQLAlchemy's Row objects cost more than the query itself at millions of rows.
_RAW_DIALECTS = frozenset({"sqlite", "postgresql"})


# A server-side cursor is planned for its first cursor_tuple_fraction of rows (PostgreSQL's default
# 0.1): on a warehouse without statistics that picked a nested loop over a materialized join, 75-85
# times slower than the plan for every row (BENCHMARKS.md, section 7). A batch read reads every
# row, so its transaction plans for all of them; SET LOCAL ends with the transaction, before the
# connection is pooled again.
_BATCH_CURSOR_TUPLE_FRACTION = 1.0
_PLAN_FOR_EVERY_ROW = "SET LOCAL cursor_tuple_fraction = %r"


# An as-of statement reads the spine's entities' rows through their indexes or hashes whole
# tables: at the default random_page_cost (4, a disk's) the planner hashes all 100,000 users for a
# 1,000-row spine (17 of the statement's 22 ms, BENCHMARKS.md section 9); warehouse tables read by
# features are cached, and at 1.1 it probes the index for small spines (6 ms) and still hashes
# for large ones. And a plan for each spine's own size: after five runs psycopg prepares the
# statement, and a generic plan (made for no size) took 313 ms on a 50,000-row spine against 190.
# set_config(..., true): for this statement's transaction only, in one round trip.
_AS_OF_PLAN = ("SELECT set_config('random_page_cost', '1.1', true), "
               "set_config('plan_cache_mode', 'force_custom_plan', true)")


# The WAL flushed so far (a standby: replayed), read before a statement takes its snapshot: every
# commit up to it is visible to that statement (online_store/ordering.py says where this is not
# exact). The system identifier tells one cluster's positions from another's.
_POSITION = ("SELECT (SELECT system_identifier FROM pg_control_system())::text, (CASE WHEN pg_is_in_recovery() "
             "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text")


# change_marker(): a commit's record is inserted into the WAL before the commit is visible (the
# flush position can lag a visible commit when synchronous_commit is off).
_CHANGE_MARKER = ("SELECT (SELECT system_identifier FROM pg_control_system())::text, (CASE WHEN pg_is_in_recovery() "
                  "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text")


def position(conn: Connection) -> bytes | None:
    """Where in the warehouse's history a statement run next on `conn` reads (None where the
    dialect has no such position: SQLite). Call it before the statement, in its transaction."""
    if conn.dialect.name != "postgresql":
        return None
    system_identifier, lsn = conn.exec_driver_sql(_POSITION).one()
    if lsn is None:
        return None
    high, _, low = lsn.partition("/")
    # `{system identifier}:{WAL position in 16 hex digits}`: positions of one cluster compare as text.
    return b"%s:%016X" % (system_identifier.encode(), (int(high, 16) << 32) | int(low, 16))


class _DriverError(Exception):
    """A DBAPI driver's own error, raised by a query read straight from its cursor."""


def _raw_rows(conn: Connection, statement, chunk_size: int, *, values: dict | None = None,
              named: bool = True, compiled=None) -> Iterator[list[tuple]] | None:
    """The rows of `statement` in chunks, read from the DBAPI cursor and converted by the columns'
    SQLAlchemy types (the result processors SQLAlchemy itself would apply, for the cursor's column
    type codes). None when a parameter needs SQLAlchemy's own conversion on the way in: then the
    caller runs the statement through SQLAlchemy. `values` are bound as the driver takes them (an
    as-of spine: psycopg adapts lists to arrays itself). `named`: on PostgreSQL, a server-side
    cursor (a batch read) rather than a plain one (a request's statement, read at once).
    `compiled`: the statement already compiled for this dialect (with render_postcompile)."""
    dialect = conn.dialect
    if compiled is None:
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = values or {}
    if any(bind.type.dialect_impl(dialect).bind_processor(dialect) is not None
           for name, bind in compiled.binds.items() if name not in values):
        return None
    params = compiled.construct_params(values)
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    return _read_cursor(conn, compiled.string, params, [column.type for column in statement.selected_columns],
                        chunk_size, named=named)


def _read_cursor(conn: Connection, sql: str, params, types: list, chunk_size: int, *,
                 named: bool = True) -> Iterator[list[tuple]]:
    dialect = conn.dialect
    driver_error = dialect.loaded_dbapi.Error
    driver = conn.connection.driver_connection
    cursor = (driver.cursor(name="feature_store_batch") if dialect.name == "postgresql" and named
              else driver.cursor())
    try:
        try:
            if dialect.name == "postgresql" and named:
                # In the cursor's transaction, before the cursor is declared (and so planned).
                driver.execute(_PLAN_FOR_EVERY_ROW % _BATCH_CURSOR_TUPLE_FRACTION).close()
            cursor.execute(sql, params)
            processors = [type_.dialect_impl(dialect).result_processor(dialect, column[1])
                          for type_, column in zip(types, cursor.description, strict=True)]
            rows = cursor.fetchmany(chunk_size)
        except driver_error as exc:
            raise _DriverError(f"{exc.__class__.__module__}.{exc.__class__.__name__}: {exc}") from exc
        converting = [(i, process) for i, process in enumerate(processors) if process is not None]
        while rows:
            if converting:
                if len(converting) == 1 and len(processors) == 2 and converting[0][0] == 1:
                    process = converting[0][1]
                    rows = [(row[0], process(row[1])) for row in rows]
                else:
                    rows = [tuple(process(value) if process else value
                                  for process, value in zip(processors, row, strict=True)) for row in rows]
            yield rows
            try:
                rows = cursor.fetchmany(chunk_size)
            except driver_error as exc:
                raise _DriverError(f"{exc.__class__.__module__}.{exc.__class__.__name__}: {exc}") from exc
    finally:
        try:
            cursor.close()
        except driver_error:
            pass  # the connection broke; its pool discards it


def _table(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a table name: {name!r}")
    return name


def _unavailable(exc: Exception) -> WarehouseUnavailable:
    # The full error goes to the log; clients get a plain statement without SQL or hosts.
    log.warning("warehouse error: %s", exc if isinstance(exc, _DriverError) else exc.__class__.__name__,
                exc_info=exc)
    return WarehouseUnavailable("the warehouse is unreachable or failed to answer")


def _query_failed(what: str, exc: Exception) -> WarehouseUnavailable:
    """A batch query that failed, with the database's own one-line reason (no SQL, no
    parameters): what an operator needs to see in the run's `failed_features`."""
    _unavailable(exc)  # logged in full
    orig = getattr(exc, "orig", None)
    detail = str(orig if orig is not None else exc).strip().splitlines()
    reason = detail[0] if detail else exc.__class__.__name__
    if isinstance(exc, _DriverError):
        reason = reason.split(": ", 1)[-1]  # drop the driver's class name
    return WarehouseUnavailable(f"the warehouse failed {what}: {reason[:300]}")


def _unreadable(feature: Feature, exc: Exception) -> WarehouseDataError:
    log.error("warehouse data for %s cannot be read: %s", feature.feature_type, exc)
    return WarehouseDataError(f"the warehouse holds {feature.feature_type} data that cannot be read "
                              "(a malformed row; see the service log)")


def describe_url(url: str) -> str:
    """`url` with any password hidden, for logs."""
    return make_url(url).render_as_string(hide_password=True)

