"""Which features read a warehouse table or column (GET /lineage, `features lineage`), from the
lineage derived from each feature's statement (feature_store/lineage.py)."""

from __future__ import annotations

from typing import Any

from feature_store.lineage import features_reading, lineage
from feature_store.registry import Registry
from feature_store.warehouse.models import Base


def every_lineage(registry: Registry) -> dict[str, dict[str, Any]]:
    """{feature_type: its lineage, as discovery's `lineage` field}, in declaration order."""
    return {feature.feature_type: lineage(feature).describe() for feature in registry}


class UnknownSource(LookupError):
    """A table or column that neither the warehouse models nor any feature names."""


def known_columns(registry: Registry) -> dict[str, set[str]]:
    """{table: columns} of the warehouse models, with whatever the registry's features read."""
    known = {name: {column.name for column in table.columns} for name, table in Base.metadata.tables.items()}
    for feature in registry:
        for table, columns in lineage(feature).columns.items():
            known.setdefault(table, set()).update(columns)
    return known


def readers(registry: Registry, table: str, column: str | None = None) -> dict[str, Any]:
    """Which features read `table` (or its `column`), JSON-able: each with the columns of the table
    it reads (only `column` when given) and their roles, and the table's path to its entity.

    Raises:
        UnknownSource: the table, or the column of it, is unknown (the message names the known ones).
    """
    known = known_columns(registry)
    if table not in known:
        raise UnknownSource(f"unknown table {table!r}; known tables: {', '.join(sorted(known))}")
    if column is not None and column not in known[table]:
        raise UnknownSource(f"unknown column {column!r} of table {table!r}; its columns: "
                            f"{', '.join(sorted(known[table]))}")
    features = []
    for feature in features_reading(registry, table, column):
        described = lineage(feature).describe()
        read = described["columns"][table]
        features.append({"feature_type": feature.feature_type, "entity_type": feature.entity.entity_type,
                         "columns": read if column is None else {column: read[column]},
                         "path": described["paths"][table]})
    return {"table": table, "column": column, "features": features}
