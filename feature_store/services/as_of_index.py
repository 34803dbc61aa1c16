"""As-of indexes: each feature's history of values, so a training set reads its values without
running a statement per chunk.

A feature's value of an entity as of an instant depends only on which rows its statement reads
exist by then and which event columns (`bound_at`) have come by then (warehouse/statements.py,
`AsOf`), so it changes only at such instants. A feature's index holds every (entity, instant) of
them (`Warehouse.event_times`, derived from the declared statement) with the value as of it,
computed by the feature's as-of statement itself (`Warehouse.batch_as_of` over a spine of those
instants: the one as-of mechanism, no second copy of any feature's logic). A spine row's value is
then the one at the entity's latest instant at or before its own (a binary search, `numpy`), and
no such instant means the entity did not exist yet.

An index holds while the warehouse is unchanged: it is built between two equal readings of the
warehouse's change marker (`Warehouse.change_marker`: PostgreSQL's WAL position, SQLite's
data_version) and used only while a request reads that marker again. Any commit to the warehouse
(on PostgreSQL: to any database of its cluster) makes every index stale: training sets then run
their statements, as they do without one, and when one of at least `BUILD_MIN_ROWS` rows has
been answered, the stale indexes are rebuilt in the background. Values as of an instant do not
depend on when they are computed except through commits (a status updated in place, a row
inserted with an earlier created_at), which is why any commit, not only a newer instant, retires
an index.

On PostgreSQL, indexes are shared through Redis (`INDEX_KEY`: about 40 bytes per (entity,
instant) plus the encoded values), built by one process at a time (a lock key), and each web
process keeps the ones it uses in memory. SQLite's marker compares only within a process, so
there each web process builds and keeps its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from redis.exceptions import RedisError

from feature_store.errors import WarehouseDataError, WarehouseUnavailable
from feature_store.registry import Feature

log = logging.getLogger(__name__)

BUILD_MIN_ROWS = 10_000  # a training set at least this long starts a missing or stale index's build
_BUILD_CHUNK = 50_000  # spine rows per as-of statement of a build (as a training set's chunk)
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


def microseconds(moment: datetime) -> int:
    """A naive UTC instant as whole microseconds from 1970 (exact for any year)."""
    return (moment - _EPOCH) // _US


def from_microseconds(us: int) -> datetime:
    """microseconds()'s instant again."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class AsOfIndex:
    """One feature's values at every instant they can change, valid at `marker`."""

    feature_type: str
    marker: bytes
    entity_ids: np.ndarray  # int64, sorted: the indexed entities
    keys: np.ndarray  # int64, sorted: (entity's rank) * (len(instants) + 1) + (instant's rank + 1)
    ranks: np.ndarray  # int64: each key's entity rank
    instants: np.ndarray  # int64 microseconds, sorted, distinct: every instant of the index
    values: np.ndarray  # object: each key's encoded value (None: the entity did not exist then)
    seconds: float  # how long the build took
    rank_table: np.ndarray | None = None  # rank by id - entity_ids[0] (-1: none), when the ids are dense

    def __post_init__(self) -> None:
        if self.rank_table is None and len(self.entity_ids):
            span = int(self.entity_ids[-1]) - int(self.entity_ids[0]) + 1
            if span <= 4 * len(self.entity_ids) + 1024:  # a direct table beats a binary search
                table = np.full(span, -1, dtype=np.int64)
                table[self.entity_ids - self.entity_ids[0]] = np.arange(len(self.entity_ids))
                object.__setattr__(self, "rank_table", table)

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, entity_ids: np.ndarray, has_id: np.ndarray, instants_us: np.ndarray
               ) -> tuple[list[bytes | None], np.ndarray]:
        """Each (entity id, instant)'s encoded value as of the instant (None where the entity did
        not exist then, has no row at all, or no id: `has_id` false), and where it existed.

        Args:
            entity_ids: int64 (any value where has_id is false); has_id: bool; instants_us: int64.
        """
        count = len(entity_ids)
        if not count or not len(self.keys):
            return [None] * count, np.zeros(count, dtype=bool)
        if self.rank_table is not None:
            low, high = self.entity_ids[0], self.entity_ids[-1]
            inside = has_id & (entity_ids >= low) & (entity_ids <= high)
            rank = np.where(inside, self.rank_table[np.clip(entity_ids, low, high) - low], -1)
            present = rank >= 0
        else:
            rank = np.searchsorted(self.entity_ids, entity_ids)
            present = has_id & (rank < len(self.entity_ids))
            present[present] = self.entity_ids[rank[present]] == entity_ids[present]
        # The latest instant of the index at or before each row's (-1: before every one).
        instant_rank = _sorted_search(self.instants, instants_us) - 1
        wanted = rank * (len(self.instants) + 1) + instant_rank + 1
        found = _sorted_search(self.keys, wanted) - 1
        hit = present & (found >= 0)
        hit[hit] = self.ranks[found[hit]] == rank[hit]
        out = np.full(count, None, dtype=object)
        out[hit] = self.values[found[hit]]
        hit &= out != None  # noqa: E711 - elementwise: an instant at which the entity did not exist
        return out.tolist(), hit


def _sorted_search(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """np.searchsorted(haystack, needles, side="right"), the needles searched in order (a binary
    search per needle in random order misses the cache at every step: 2-3 times slower)."""
    order = np.argsort(needles, kind="stable")
    found = np.empty(len(needles), dtype=np.int64)
    found[order] = np.searchsorted(haystack, needles[order], side="right")
    return found


def build(warehouse, feature: Feature, marker: bytes) -> AsOfIndex | None:
    """`feature`'s index from the warehouse as it is (the caller checks the marker around it), or
    None when its statement has no derived event times.

    Raises:
        WarehouseUnavailable, WarehouseDataError.
    """
    started = time.perf_counter()
    events = warehouse.event_times(feature)
    if events is None:
        return None
    id_parts, us_parts = [], []
    for rows in events:  # into arrays as they are read: 16 bytes an instant, not a tuple's 100
        id_parts.append(np.fromiter((entity_id for entity_id, _ in rows), dtype=np.int64, count=len(rows)))
        us_parts.append(np.fromiter((microseconds(at) for _, at in rows), dtype=np.int64, count=len(rows)))
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
    at = np.concatenate(us_parts) if us_parts else np.zeros(0, dtype=np.int64)
    del id_parts, us_parts
    # Distinct (entity, instant) in order; SQLite may hold one instant in several text forms.
    order = np.lexsort((at, ids))
    ids, at = ids[order], at[order]
    distinct = np.ones(len(ids), dtype=bool)
    distinct[1:] = (ids[1:] != ids[:-1]) | (at[1:] != at[:-1])
    ids, at = ids[distinct], at[distinct]
    encoded = np.empty(len(ids), dtype=object)
    for start in range(0, len(ids), _BUILD_CHUNK):
        end = min(start + _BUILD_CHUNK, len(ids))
        items = [(pos, entity_id, from_microseconds(us)) for pos, entity_id, us
                 in zip(range(start, end), ids[start:end].tolist(), at[start:end].tolist(), strict=True)]
        for pos, value in warehouse.batch_as_of(feature, items).items():
            encoded[pos] = value
    entity_ids = np.unique(ids)
    instants = np.unique(at)
    ranks = np.searchsorted(entity_ids, ids)
    keys = ranks * (len(instants) + 1) + np.searchsorted(instants, at) + 1
    return AsOfIndex(feature.feature_type, marker, entity_ids, keys, ranks, instants, encoded,
                     round(time.perf_counter() - started, 3))


INDEX_KEY = "feature-store:as-of-index:{feature_type}"  # hash: marker, blob, seconds
_BUILDING_KEY = "feature-store:as-of-index:{feature_type}:building"  # one builder per feature at a time
_BUILD_LEASE = 900  # seconds a builder holds the lock at most (a killed one's lapses)


def dumps(index: AsOfIndex) -> bytes:
    """An index as bytes (its arrays' raw memory, the values' lengths, then the values)."""
    lengths = np.fromiter((-1 if v is None else len(v) for v in index.values), dtype=np.int64, count=len(index.values))
    arrays = (index.entity_ids, index.keys, index.ranks, index.instants, lengths)
    head = np.array([len(a) for a in arrays], dtype=np.int64)
    return b"".join([head.tobytes(), *(a.astype(np.int64).tobytes() for a in arrays),
                     b"".join(v for v in index.values if v is not None)])


def loads(feature_type: str, marker: bytes, data: bytes, seconds: float) -> AsOfIndex:
    """dumps()'s index again."""
    view = memoryview(data)
    head = np.frombuffer(view[:40], dtype=np.int64)
    arrays, at = [], 40
    for count in head.tolist():
        arrays.append(np.frombuffer(view[at:at + 8 * count], dtype=np.int64))
        at += 8 * count
    entity_ids, keys, ranks, instants, lengths = arrays
    values = np.empty(len(lengths), dtype=object)
    ends = (at + np.cumsum(np.maximum(lengths, 0))).tolist()
    starts = [at, *ends[:-1]]
    values[:] = [None if n < 0 else data[a:b] for a, b, n in zip(starts, ends, lengths.tolist(), strict=True)]
    return AsOfIndex(feature_type, marker, entity_ids, keys, ranks, instants, values, seconds)


class AsOfIndexes:
    """The as-of indexes, shared by every web process through Redis: each process keeps the ones
    it uses in memory and takes a newer one from Redis when the warehouse's marker says so. A
    missing or stale index is built in the background by one process at a time (a lock in
    Redis), one feature after another. A build that the warehouse changed under is discarded
    and not retried for `retry_after` seconds (or five times the build's own time, if longer)."""

    def __init__(self, warehouse, redis, *, enabled: bool = True, retry_after: float = 60.0) -> None:
        self.warehouse = warehouse
        self.redis = redis
        self.enabled = enabled
        self.retry_after = retry_after
        self._indexes: dict[str, AsOfIndex] = {}
        self._not_before: dict[str, float] = {}
        self._queue: list[Feature] = []
        self._lock = threading.Lock()
        self._builder: threading.Thread | None = None

    def current(self, features: Sequence[Feature]) -> dict[str, AsOfIndex]:
        """The features' indexes that hold for the warehouse as it is now, by feature type.
        Nothing here fails a training set: without an index it runs its statements."""
        if not self.enabled:
            return {}
        marker = self.warehouse.change_marker()
        if marker is None:
            return {}
        with self._lock:
            held = dict(self._indexes)
        valid = {f.feature_type: held[f.feature_type] for f in features
                 if f.feature_type in held and held[f.feature_type].marker == marker}
        wanted = [f for f in features if f.feature_type not in valid]
        if wanted and self.warehouse.shared_change_marker:
            valid.update(self._from_redis(wanted, marker))
        return valid

    def build_missing(self, features: Sequence[Feature], rows: int) -> None:
        """After a training set of `rows` rows (at least BUILD_MIN_ROWS): start the background
        build of these features' indexes that are missing or stale (after it, not during it:
        the build and the training set's statements would share the warehouse and the CPU)."""
        if not self.enabled or rows < BUILD_MIN_ROWS:
            return
        held = self.current(features)
        with self._lock:
            now = time.monotonic()
            self._queue.extend(f for f in features if f.feature_type not in held and f not in self._queue
                               and now >= self._not_before.get(f.feature_type, 0.0))
            if self._queue and (self._builder is None or not self._builder.is_alive()):
                self._builder = threading.Thread(target=self._build_queued, name="as-of-index", daemon=True)
                self._builder.start()

    def close(self, timeout: float = 30.0) -> None:
        """No more builds; wait for the one under way (an app being dropped: tests)."""
        with self._lock:
            self.enabled = False
            self._queue.clear()
            builder = self._builder
        if builder is not None:
            builder.join(timeout)

    def build_now(self, features: Sequence[Feature]) -> dict[str, AsOfIndex]:
        """Build these features' indexes in this thread (tests, benchmarks); those that held."""
        return {f.feature_type: index for f in features if (index := self._build(f)) is not None}

    def describe(self) -> dict[str, dict]:
        """Each index this process holds: its size, build time and marker."""
        with self._lock:
            return {ft: {"instants": len(index), "entities": len(index.entity_ids), "build_seconds": index.seconds,
                         "marker": index.marker.decode()} for ft, index in self._indexes.items()}

    def _from_redis(self, features: Sequence[Feature], marker: bytes) -> dict[str, AsOfIndex]:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for feature in features:
                pipe.hget(INDEX_KEY.format(feature_type=feature.feature_type), "marker")
            stored = pipe.execute()
            found = {}
            for feature, stored_marker in zip(features, stored, strict=True):
                if stored_marker != marker:
                    continue
                blob, stored_marker, seconds = self.redis.hmget(INDEX_KEY.format(feature_type=feature.feature_type),
                                                                "blob", "marker", "seconds")
                if blob is None or stored_marker != marker:
                    continue
                index = loads(feature.feature_type, marker, blob, float(seconds or 0))
                with self._lock:
                    self._indexes[feature.feature_type] = index
                found[feature.feature_type] = index
            return found
        except RedisError as exc:
            log.warning("as-of indexes not read from Redis: %s", exc)
            return {}

    def _build_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                feature = self._queue[0]
            try:
                self._build(feature)
            finally:
                with self._lock:
                    if feature in self._queue:
                        self._queue.remove(feature)

    def _build(self, feature: Feature) -> AsOfIndex | None:
        started = time.monotonic()
        lock = _BUILDING_KEY.format(feature_type=feature.feature_type)
        shared = self.warehouse.shared_change_marker  # else each process builds and keeps its own
        index = before = after = None
        token = uuid.uuid4().hex
        try:
            if shared and not self.redis.set(lock, token, nx=True, ex=_BUILD_LEASE):
                return None  # another process builds it: it appears in Redis when done
            try:
                before = self.warehouse.change_marker()
                index = build(self.warehouse, feature, before) if before is not None else None
                after = self.warehouse.change_marker()
                if shared and index is not None and after == before:
                    self.redis.hset(INDEX_KEY.format(feature_type=feature.feature_type),
                                    mapping={"marker": index.marker, "blob": dumps(index), "seconds": index.seconds})
            finally:
                if shared and self.redis.get(lock) == token.encode():
                    self.redis.delete(lock)
        except (WarehouseUnavailable, WarehouseDataError, RedisError) as exc:
            log.warning("as-of index of %s not built: %s", feature.feature_type, exc)
            index = None
        except Exception:  # a background thread: log, never take the process down
            log.exception("as-of index of %s not built", feature.feature_type)
            index = None
        if index is None or after != before:
            with self._lock:
                self._not_before[feature.feature_type] = time.monotonic() + max(
                    self.retry_after, 5 * (time.monotonic() - started))
            if index is not None:
                log.info("as-of index of %s discarded: the warehouse changed while it was built", feature.feature_type)
            return None
        with self._lock:
            self._indexes[feature.feature_type] = index
        log.info("as-of index of %s built: %d instants of %d entities in %.2f s", feature.feature_type, len(index),
                 len(index.entity_ids), index.seconds)
        return index
