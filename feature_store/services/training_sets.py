"""Training sets: one row per spine row (entity id, instant, passed-through columns), one column
per feature, each value as the warehouse's rows define it at the row's instant.

A spine is validated and spooled to a temporary file first (so a malformed row is a 400 before
any output, and memory does not grow with the spine), then computed a chunk at a time: one
as-of statement per feature for every row of the chunk, whatever their instants.
"""

from __future__ import annotations

import marshal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from feature_store import metrics
from feature_store.errors import BadRequest as SpineError
from feature_store.errors import TooLarge as SpineTooLarge
from feature_store.registry import Entity, Feature, Registry

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
    _chunk: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._spool = tempfile.TemporaryFile(prefix="feature-store-spine-")
        self.extra_types = {name: set() for name in self.extra_columns}

    def add(self, entity_id: Any, as_of: Any, extra: Sequence[Any], where: str) -> None:
        """Validate one row (`where` names it in errors) and spool it.

        Raises:
            SpineError, SpineTooLarge.
        """
        if isinstance(entity_id, bool) or not isinstance(entity_id, str | int):
            raise SpineError(f"{where}.entity_id: must be a string or an integer")
        entity_id = str(entity_id)
        if not entity_id:
            raise SpineError(f"{where}.entity_id: must not be empty")
        try:
            moment = parse_instant(as_of)
        except (ValueError, OverflowError):
            raise SpineError(f"{where}.as_of: must be an ISO 8601 instant such as 2025-03-01T00:00:00 (UTC unless "
                             "it carries Z or an offset)") from None
        if self.rows >= self.max_rows:
            raise SpineTooLarge(f"the spine has more than {self.max_rows} rows")
        for name, value in zip(self.extra_columns, extra, strict=True):
            if type(value) is int and not -(2**63) <= value < 2**63:
                raise SpineError(f"{where}.{name}: integers must fit in 64 bits (send it as a string)")
            self.extra_types[name].add(type(value))
        self._chunk.append((entity_id, Entity.parse_id(entity_id), moment.isoformat(), tuple(extra)))
        self.rows += 1
        if len(self._chunk) >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if self._chunk:
            marshal.dump(self._chunk, self._spool)
            self._chunk = []

    def chunks(self) -> Iterator[list[tuple]]:
        self._flush()
        marshal.dump(None, self._spool)
        self._spool.seek(0)
        while (chunk := marshal.load(self._spool)) is not None:
            yield chunk

    def close(self) -> None:
        self._spool.close()


@dataclass(frozen=True)
class TrainingRow:
    entity_id: str
    as_of: str  # ISO 8601, UTC, no offset
    extra: tuple
    existed: bool
    values: tuple  # JSON encodings, one per feature (None when the entity did not exist)


def compute(spine: Spine, features: Sequence[Feature], warehouse) -> Iterator[list[TrainingRow]]:
    """The training set's rows, a chunk at a time, in spine order.

    Raises:
        WarehouseUnavailable, WarehouseDataError: the warehouse failed (possibly part-way).
    """
    for chunk in spine.chunks():
        items = [(pos, number, datetime.fromisoformat(as_of))
                 for pos, (_, number, as_of, _) in enumerate(chunk) if number is not None]
        columns = [warehouse.batch_as_of(feature, items) for feature in features]
        for values in columns:
            metrics.count_values("as_of", len(values))
        existed = set().union(*columns) if columns else set()
        yield [TrainingRow(entity_id, as_of, extra, pos in existed,
                           tuple(values.get(pos) for values in columns))
               for pos, (entity_id, _, as_of, extra) in enumerate(chunk)]
