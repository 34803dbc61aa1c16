"""The feature catalog's building blocks: what a feature declaration is, and the lookup of them.

A `Feature` is declared once (see `feature_store.features`) and that one declaration drives
discovery (its metadata), batch extraction and on-demand computation (its `query` and `value`).
This module imports nothing else of the project.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

# A warehouse id is a 64-bit integer; an entity id is its decimal form, written exactly so.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CANONICAL_INT = re.compile(r"(?:0|-?[1-9][0-9]{0,18})")
_FEATURE_TYPE = re.compile(r"[a-z][a-z0-9_]*")


class DataType(enum.StrEnum):
    """The data types a feature value can have, as discovery reports them."""

    DATETIME = "datetime"
    INTEGER = "integer"
    STRING = "string"
    FLOAT = "float"
    BOOLEAN = "boolean"


def _encode_datetime(value: datetime) -> str:
    # ISO 8601 without offset; `.ffffff` only when there is a fraction (datetime.isoformat's rule).
    return value.replace(tzinfo=None).isoformat()


_TO_JSONABLE: dict[DataType, Callable[[Any], Any]] = {
    DataType.DATETIME: _encode_datetime,
    DataType.INTEGER: int,
    DataType.STRING: str,
    DataType.FLOAT: float,
    DataType.BOOLEAN: bool,
}


@dataclass(frozen=True)
class Entity:
    """A kind of thing features describe, identified by a row id of one warehouse table.

    Attributes:
        entity_type: the id's name in the API (`user_id`).
        table: the warehouse table whose rows are the entities (`users`).
    """

    entity_type: str
    table: str

    @staticmethod
    def parse_id(entity_id: str) -> int | None:
        """The warehouse id that `entity_id` names, or None when no row can have that id.

        Ids are matched as written: only the plain decimal form of a 64-bit integer names a row
        ("007", "7.0", "1:2", "*" and 40-digit numbers name none), so such ids never reach the
        warehouse or any Redis key.
        """
        if not _CANONICAL_INT.fullmatch(entity_id):
            return None
        number = int(entity_id)
        return number if INT64_MIN <= number <= INT64_MAX else None


def _compact(encoded: bytes) -> bytes:
    """`encoded` in an allocation of its own size: orjson (3.13) returns bytes that hold 4 KB
    whatever their length, so values kept by the thousand (an as-of chunk, a training set's
    columns) would cost 4 KB each (measured: 50,000 values, 135 MB; copied, 2 MB)."""
    return memoryview(encoded).tobytes()


def _compact_dumps(value: Any) -> bytes:
    return memoryview(orjson.dumps(value)).tobytes()


def single_input(raw: Any) -> Any:
    """A feature's default value function: the query's one input is the value."""
    return raw


_U64_MAX = 2**64 - 1



@dataclass(frozen=True)
class Feature:
    """One feature: its catalog metadata and how it is computed from the warehouse.

    Attributes:
        query: `query(scope)` returns a SQLAlchemy SELECT of `(key, *inputs)` with one row per
            existing entity, written against the scope's `select`, `on` and `key` (see
            warehouse/statements.py). It is set-based: the same statement serves the whole table
            (batch extraction), any set of ids (on-demand computation) and a spine of
            (entity, instant) rows (as-of values for training).
        value: turns a row's inputs into the feature value (default: the single input). Kept in
            Python where SQL dialects disagree (timestamp arithmetic on SQLite text).
        max_age: how old a served value may be (None: no limit). An older cached value is
            recomputed on read; FEATURE_MAX_AGE overrides it per deployment (services/freshness.py).

    A feature's version is not declared: it is derived from its query and value function
    (feature_store/versions.py), so it cannot be forgotten.
    """

    feature_type: str
    name: str
    description: str
    entity: Entity
    data_type: DataType
    created_at: datetime
    query: Callable[[Any], Any]
    value: Callable[..., Any] = single_input
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        if not _FEATURE_TYPE.fullmatch(self.feature_type):
            raise ValueError(f"feature_type {self.feature_type!r} must be lowercase snake_case")

    def encode(self, inputs: tuple) -> bytes:
        """The JSON encoding (as stored in Redis and served) of the value for one query row."""
        value = self.value(*inputs)
        if value is not None:
            value = _TO_JSONABLE[self.data_type](value)
        return _compact(orjson.dumps(value))

    def rows_encoder(self) -> Callable[[list[tuple]], list[tuple[int, bytes]]]:
        """A function from query rows `(entity id, *inputs)` to `[(entity id, encode(inputs))]`.

        Batch extraction encodes millions of rows with it: for a single input of a plain type
        it encodes in one step what encode() does in several (the same bytes; a property test
        holds them to it), and falls back to encode() for anything else.
        """
        encode = self.encode
        if self.value is not single_input:
            return lambda rows: [(row[0], encode(row[1:])) for row in rows]
        dumps = _compact_dumps
        if self.data_type is DataType.INTEGER:
            return lambda rows: [(entity_id, b"%d" % raw if type(raw) is int and INT64_MIN <= raw <= _U64_MAX
                                  else encode((raw,))) for entity_id, raw in rows]
        if self.data_type is DataType.STRING:
            return lambda rows: [(entity_id, dumps(raw) if type(raw) is str else encode((raw,)))
                                 for entity_id, raw in rows]
        if self.data_type is DataType.DATETIME:
            # orjson writes a naive datetime as isoformat() does (fraction only when non-zero).
            return lambda rows: [(entity_id, dumps(raw) if type(raw) is datetime and raw.tzinfo is None
                                  else encode((raw,))) for entity_id, raw in rows]
        return lambda rows: [(row[0], encode(row[1:])) for row in rows]

    def describe(self) -> dict[str, Any]:
        """The discovery entry of this feature."""
        return {
            "feature_type": self.feature_type,
            "name": self.name,
            "description": self.description,
            "entity_type": self.entity.entity_type,
            "data_type": self.data_type.value,
            "created_at": _encode_datetime(self.created_at),
        }


@dataclass(frozen=True)
class FeatureSet:
    """A named list of features of one entity type, declared beside the features: what a model
    version was trained on, served together for one entity and usable as a training set's columns.

    Attributes:
        name: lowercase snake_case, conventionally versioned (`underwriting_v1`); a set is never
            changed once models depend on it: declare `underwriting_v2` instead.
    """

    name: str
    feature_types: tuple[str, ...]
    description: str = ""
    created_at: datetime = datetime(2025, 1, 1)

    def __post_init__(self) -> None:
        if not _FEATURE_TYPE.fullmatch(self.name):
            raise ValueError(f"feature set name {self.name!r} must be lowercase snake_case")
        if not self.feature_types or len(set(self.feature_types)) != len(self.feature_types):
            raise ValueError(f"feature set {self.name!r} must list distinct features, at least one")


class Registry:
    """The declared features, by feature type, and feature sets, by name, in declaration order."""

    def __init__(self, features: Iterable[Feature] = ()) -> None:
        self._features: dict[str, Feature] = {}
        self._sets: dict[str, FeatureSet] = {}
        for feature in features:
            self.register(feature)

    def register_set(self, feature_set: FeatureSet) -> FeatureSet:
        """Declare a feature set of already declared features, all of one entity type."""
        if feature_set.name in self._sets:
            raise ValueError(f"feature set {feature_set.name!r} is declared twice")
        unknown = [ft for ft in feature_set.feature_types if ft not in self._features]
        if unknown:
            raise ValueError(f"feature set {feature_set.name!r} lists undeclared features {unknown}")
        entities = {self._features[ft].entity for ft in feature_set.feature_types}
        if len(entities) != 1:
            raise ValueError(f"feature set {feature_set.name!r} mixes entity types "
                             f"{sorted(e.entity_type for e in entities)}")
        self._sets[feature_set.name] = feature_set
        return feature_set

    def feature_set(self, name: str) -> FeatureSet | None:
        return self._sets.get(name)

    def feature_sets(self) -> list[FeatureSet]:
        return list(self._sets.values())

    def entity_of(self, feature_set: FeatureSet) -> Entity:
        return self._features[feature_set.feature_types[0]].entity

    def register(self, feature: Feature) -> Feature:
        if feature.feature_type in self._features:
            raise ValueError(f"feature {feature.feature_type!r} is declared twice")
        self._features[feature.feature_type] = feature
        return feature

    def get(self, feature_type: str) -> Feature | None:
        return self._features.get(feature_type)

    def feature_types(self) -> list[str]:
        return list(self._features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features.values())

    def __len__(self) -> int:
        return len(self._features)
