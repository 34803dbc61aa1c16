"""Training sets: one row per spine row (entity id, instant, passed-through columns), one column
per feature, each value as the warehouse's rows define it at the row's instant.

A spine is validated and spooled to a temporary file first (so a malformed row is a 400 before
any output, and memory does not grow with the spine), then computed a chunk at a time: one
as-of statement per feature for every row of the chunk, whatever their instants.
"""

from __future__ import annotations

import concurrent.futures
import marshal
import tempfile
import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from feature_store import metrics
from feature_store.errors import BadRequest as SpineError
from feature_store.errors import TooLarge as SpineTooLarge
from feature_store.registry import Entity, Feature, Registry
from feature_store.services.as_of_index import AsOfIndex, from_microseconds, microseconds

SPINE_COLUMNS = ("entity_id", "as_of")


def resolve_features(registry: Registry, feature_types: Sequence[str] | None, feature_set: str | None
                     ) -> tuple[list[Feature], Entity]:
    """The features a training set's columns are, and their one entity type.

    Raises:
        SpineError: neither or both given, an unknown name, or features of several entity types.
    """
    if (feature_types is None) == (feature_set is None):
        raise SpineError("give either feature_types (a list) or feature_set (a name)")
    if feature_set is not None:
        declared = registry.feature_set(feature_set)
        if declared is None:
            known = ", ".join(s.name for s in registry.feature_sets())
            raise SpineError(f"unknown feature_set {feature_set!r}; known feature sets: {known}")
        feature_types = declared.feature_types
    if not feature_types:
        raise SpineError("feature_types: must not be empty")
    features = []
    for i, feature_type in enumerate(feature_types):
        feature = registry.get(feature_type) if isinstance(feature_type, str) else None
        if feature is None:
            raise SpineError(f"feature_types[{i}]: unknown feature_type {feature_type!r}; known feature types: "
                             f"{', '.join(registry.feature_types())}")
        if feature in features:
            raise SpineError(f"feature_types[{i}]: {feature_type!r} is listed twice")
        features.append(feature)
    entities = {f.entity for f in features}
    if len(entities) > 1:
        raise SpineError("a training set's features must share the spine's entity type; got "
                         + ", ".join(f"{f.feature_type} ({f.entity.entity_type})" for f in features))
    return features, entities.pop()


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 instant as naive UTC (no offset means UTC). Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


_fromisoformat = datetime.fromisoformat
_parse_id = Entity.parse_id


def _where(where: str | int) -> str:
    return where if isinstance(where, str) else f"spine line {where}"


@dataclass
class Spine:
    """A validated spine, spooled: rows of (entity id text, warehouse id or None, as_of ISO,
    passed-through values), in chunks."""

    entity: Entity
    extra_columns: list[str]
    max_rows: int
    chunk_rows: int = 50_000
    id_column: str = "entity_id"  # as the spine names it: entity_id, or the entity type (user_id)
    known_columns: set = field(default_factory=set)
    rows: int = 0
    extra_types: dict[str, set] = field(default_factory=dict)
    _spool: Any = None
    _chunk: tuple = ()  # the columns of chunks(), as rows are added (_new_chunk())

    def __post_init__(self) -> None:
        self._spool = tempfile.TemporaryFile(prefix="feature-store-spine-")
        self._chunk = _new_chunk()
        self.extra_types = {name: set() for name in self.extra_columns}

    def add(self, entity_id: Any, as_of: Any, extra: Sequence[Any], where: str | int) -> None:
        """Validate one row and spool it. `where` names it in errors: a text, or a CSV line's
        number (its text is only made for an error: this runs once per spine row).

        Raises:
            SpineError, SpineTooLarge.
        """
        if type(entity_id) is not str:
            if isinstance(entity_id, bool) or not isinstance(entity_id, int):
                raise SpineError(f"{_where(where)}.entity_id: must be a string or an integer")
            entity_id = str(entity_id)
        if not entity_id:
            raise SpineError(f"{_where(where)}.entity_id: must not be empty")
        try:
            moment = _fromisoformat(as_of.strip()) if type(as_of) is str else parse_instant(as_of)
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
        except (ValueError, OverflowError):
            raise SpineError(f"{_where(where)}.as_of: must be an ISO 8601 instant such as 2025-03-01T00:00:00 (UTC "
                             "unless it carries Z or an offset)") from None
        if self.rows >= self.max_rows:
            raise SpineTooLarge(f"the spine has more than {self.max_rows} rows")
        if extra:
            for name, value in zip(self.extra_columns, extra, strict=True):
                kind = type(value)
                if kind is int and not -(2**63) <= value < 2**63:
                    raise SpineError(f"{_where(where)}.{name}: integers must fit in 64 bits (send it as a string)")
                self.extra_types[name].add(kind)
        ids, numbers, known, instants, extras = self._chunk
        ids.append(entity_id)
        number = _parse_id(entity_id)
        numbers.append(number or 0)
        known.append(number is not None)
        instants.append(microseconds(moment))
        extras.append(tuple(extra))
        self.rows += 1
        if len(ids) >= self.chunk_rows:
            self._flush()

    def add_columns(self, entity_ids: list[str], numbers: np.ndarray, known: np.ndarray, instants: np.ndarray,
                    extras: list[tuple]) -> bool:
        """Rows already validated as add() validates them (api/spine_csv.py): entity id texts,
        their warehouse ids (int64, any value where `known` is false: no row can have the id),
        as_of instants (int64, whole microseconds from 1970, UTC), passed-through value tuples.
        False, and nothing added, when they would pass max_rows (the caller leaves the spine to
        add(), whose error it is)."""
        if self.rows + len(entity_ids) > self.max_rows:
            return False
        if entity_ids:
            for name in self.extra_columns:
                self.extra_types[name].add(str)
        at = 0
        while at < len(entity_ids):
            ids, chunk_numbers, chunk_known, moments, passed = self._chunk
            take = min(self.chunk_rows - len(ids), len(entity_ids) - at)
            ids.extend(entity_ids[at:at + take])
            chunk_numbers.frombytes(np.ascontiguousarray(numbers[at:at + take], dtype=np.int64).tobytes())
            chunk_known.extend(np.ascontiguousarray(known[at:at + take], dtype=bool).tobytes())
            moments.frombytes(np.ascontiguousarray(instants[at:at + take], dtype=np.int64).tobytes())
            passed.extend(extras[at:at + take])
            at += take
            self.rows += take
            if len(ids) >= self.chunk_rows:
                self._flush()
        return True

    def _flush(self) -> None:
        # Each chunk as one length-prefixed marshal of its columns: marshal.load() from a file
        # reads object by object (a 50,000-row chunk in 130 ms), and the columns are what the
        # statements and the writers take.
        if self._chunk[0]:
            ids, numbers, known, instants, extras = self._chunk
            data = marshal.dumps((ids, numbers.tobytes(), bytes(known), instants.tobytes(), extras))
            self._spool.write(len(data).to_bytes(8, "little"))
            self._spool.write(data)
            self._chunk = _new_chunk()

    def chunks(self) -> Iterator[SpineChunk]:
        """The spooled rows, a chunk at a time, as columns."""
        self._flush()
        self._spool.seek(0)
        while size := int.from_bytes(self._spool.read(8), "little"):
            ids, numbers, known, instants, extras = marshal.loads(self._spool.read(size))
            yield SpineChunk(ids, np.frombuffer(numbers, dtype=np.int64), np.frombuffer(known, dtype=bool),
                             np.frombuffer(instants, dtype=np.int64), extras)

    def close(self) -> None:
        self._spool.close()


class SpineChunk(NamedTuple):
    """A chunk of a spine's rows, as columns."""

    entity_ids: list[str]  # as sent
    numbers: np.ndarray  # int64: the warehouse id each names (any value where `known` is false)
    known: np.ndarray  # bool: whether a warehouse row can have the id
    as_of_us: np.ndarray  # int64: the instant, microseconds from 1970, UTC
    extra: list[tuple]  # passed-through values, one tuple per row


def _new_chunk() -> tuple:
    return [], array("q"), bytearray(), array("q"), []


class TrainingChunk(NamedTuple):
    """A chunk of a training set's rows, in spine order, as columns (what Parquet is written
    from, and cheaper to make than a row object per spine row)."""

    entity_ids: list[str]
    as_of_us: list[int]  # microseconds from 1970, UTC
    extra: list[tuple]  # passed-through values, one tuple per row
    existed: list[bool]
    values: list[list]  # per feature: its JSON encodings, one per row (None when the entity did not exist)

    def __len__(self) -> int:
        return len(self.entity_ids)

    def as_of(self) -> list[str]:
        """The instants as ISO 8601 texts, UTC, no offset (datetime.isoformat()'s)."""
        return iso_texts(self.as_of_us)

    def rows(self) -> Iterator[tuple]:
        """(entity id, as_of ISO text, extra, existed, (value per feature)) per row."""
        return zip(self.entity_ids, self.as_of(), self.extra, self.existed, zip(*self.values, strict=True),
                   strict=True)


def iso_texts(micros: Sequence[int]) -> list[str]:
    """Instants (microseconds from 1970) as datetime.isoformat() writes them, naive: `.ffffff`
    only when there is a fraction. By numpy (a fifth of the time of a datetime per value)."""
    us = np.asarray(micros, dtype=np.int64)
    texts = np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
    for i in np.flatnonzero(us % 1_000_000 == 0).tolist():
        texts[i] = texts[i][:19]
    return texts


def compute(spine: Spine, features: Sequence[Feature], warehouse,
            indexed: Mapping[str, AsOfIndex] | None = None) -> Iterator[TrainingChunk]:
    """The training set's rows, a chunk at a time, in spine order.

    A feature with a valid as-of index in `indexed` (services/as_of_index.py) is looked up there;
    the others' statements of a chunk run side by side (each in a backend of its own), and the
    next chunk's are under way while the caller writes this one out: the warehouse's work and
    this process's overlap. At most two chunks are held at once.

    Raises:
        WarehouseUnavailable, WarehouseDataError: the warehouse failed (possibly part-way).
    """
    indexed = indexed or {}
    computed = [f for f in features if f.feature_type not in indexed]
    chunks = spine.chunks()
    pool = _pool()
    pending = _submit(pool, next(chunks, None), computed, warehouse)
    try:
        while pending is not None:
            chunk, futures = pending
            results = iter([future.result() for future in futures])
            pending = _submit(pool, next(chunks, None), computed, warehouse)
            entity_ids, numbers, known, as_of, extra = chunk
            positions = range(len(entity_ids))
            existed = np.zeros(len(entity_ids), dtype=bool)
            columns = []
            for feature in features:
                index = indexed.get(feature.feature_type)
                if index is None:
                    values = next(results)
                    metrics.count_values("as_of", len(values))
                    columns.append(list(map(values.get, positions)))
                    existed[list(values)] = True
                    continue
                values, hit = index.lookup(numbers, known, as_of)
                columns.append(values)
                existed |= hit
            yield TrainingChunk(entity_ids, as_of, extra, existed.tolist(), columns)
    finally:
        if pending is not None:  # the caller stopped (a client gone, a failure): no more work
            for future in pending[1]:
                if not future.cancel():
                    future.exception()  # wait: the chunk's connections go back before the caller goes on


_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads the features' statements run on, started once per process (starting two
    threads per training set cost 4 ms of a 1,000-row one) and created on first use, not at
    import. Eight: two training sets at once (TRAINING_SET_CONCURRENCY) with two chunks of a
    few features each under way; more only queue."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="training-set")
        return _POOL


def _submit(pool, chunk, features, warehouse):
    if chunk is None:
        return None
    if not features:
        return chunk, []
    positions = np.flatnonzero(chunk.known)
    numbers, instants = chunk.numbers[positions].tolist(), chunk.as_of_us[positions].tolist()
    items = [(pos, number, from_microseconds(us))
             for pos, number, us in zip(positions.tolist(), numbers, instants, strict=True)]
    return chunk, [pool.submit(warehouse.batch_as_of, feature, items) for feature in features]
