"""The feature catalog."""

from __future__ import annotations

from feature_store.registry import Registry


def catalog(registry: Registry) -> list[dict]:
    """One discovery entry per declared feature, in declaration order."""
    return [feature.describe() for feature in registry]
