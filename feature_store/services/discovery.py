"""The feature catalog: features and feature sets."""

from __future__ import annotations

from feature_store.registry import Registry, _encode_datetime


def catalog(registry: Registry) -> list[dict]:
    """One discovery entry per declared feature, in declaration order."""
    sets: dict[str, list[str]] = {}
    for feature_set in registry.feature_sets():
        for feature_type in feature_set.feature_types:
            sets.setdefault(feature_type, []).append(feature_set.name)
    return [feature.describe() | {"feature_sets": sets.get(feature.feature_type, [])} for feature in registry]


def feature_sets(registry: Registry) -> list[dict]:
    """One entry per declared feature set, in declaration order."""
    return [{"name": s.name, "description": s.description, "entity_type": registry.entity_of(s).entity_type,
             "feature_types": list(s.feature_types), "created_at": _encode_datetime(s.created_at)}
            for s in registry.feature_sets()]
