"""The feature catalog: features and feature sets, with what is derived from each declaration
(lineage, versions) and what the store knows of it (freshness, drift at its last run)."""

from __future__ import annotations

import logging

import redis

from feature_store import versions
from feature_store.errors import StoreUnavailable
from feature_store.lineage import lineage
from feature_store.online_store import OnlineStore
from feature_store.registry import Registry, _encode_datetime
from feature_store.services import freshness
from feature_store.services.statistics import drift_states

log = logging.getLogger(__name__)


def catalog(registry: Registry, store: OnlineStore | None = None,
            max_ages: dict[str, int | None] | None = None) -> list[dict]:
    """One discovery entry per declared feature, in declaration order.

    With a `store`, each entry also says how fresh the feature is and whether its last run found
    drift; when the store cannot be read (or without one) those are null: the catalog itself
    needs no store.
    """
    sets: dict[str, list[str]] = {}
    for feature_set in registry.feature_sets():
        for feature_type in feature_set.feature_types:
            sets.setdefault(feature_type, []).append(feature_set.name)
    refreshed = drift = None
    if store is not None:
        try:
            refreshed = store.refreshed()
            drift = drift_states(store.redis, registry.feature_types())
        except (StoreUnavailable, redis.RedisError) as exc:  # Redis down: the catalog still answers
            log.warning("discovery without freshness and drift: %s", exc)
            refreshed = drift = None
    recorded = versions.load_history()
    max_ages = max_ages if max_ages is not None else freshness.max_ages(registry)
    entries = []
    for feature in registry:
        history = versions.history(feature, recorded)
        ft = feature.feature_type
        entries.append(feature.describe() | {
            "version": history[-1]["version"],
            "fingerprint": history[-1]["fingerprint"],
            "versions": history,
            "feature_sets": sets.get(ft, []),
            "lineage": lineage(feature).describe(),
            "freshness": None if refreshed is None else freshness.describe(max_ages.get(ft), refreshed.get(ft)),
            "drift": _compared(drift.get(ft)) if drift is not None else None,
        })
    return entries


def _compared(state: dict | None) -> dict | None:
    """A drift state, or None while there is nothing to compare with (no run, or only one)."""
    return state if state is not None and state.get("previous_job_id") is not None else None


def feature_sets(registry: Registry) -> list[dict]:
    """One entry per declared feature set, in declaration order."""
    return [{"name": s.name, "description": s.description, "entity_type": registry.entity_of(s).entity_type,
             "feature_types": list(s.feature_types), "created_at": _encode_datetime(s.created_at)}
            for s in registry.feature_sets()]
