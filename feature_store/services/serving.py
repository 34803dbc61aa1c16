"""Serving feature values: cached in the online store, computed on demand on a miss.

Freshness: a feature may have a max age (`Feature.max_age`, overridable with FEATURE_MAX_AGE). A
cached value older than it is recomputed on read like a miss (set-based, stored). When the
warehouse cannot be reached for that recomputation, the stale value is served, marked `stale`,
rather than failing the request: an old value the caller can see is old beats a 503 on the hot
path. (A value that is not cached at all still needs the warehouse: 503 without it.) After such a
failure, stale values are served without asking the warehouse for STALE_RETRY_SECONDS, so that
an outage does not add the warehouse's timeout to every read of an old value."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from feature_store import metrics
from feature_store.errors import WarehouseUnavailable
from feature_store.online_store import OnlineStore, now_seconds
from feature_store.registry import Entity, Registry
from feature_store.warehouse import Warehouse

STALE_RETRY_SECONDS = 5.0
NOT_FOUND = "not_found"
UNKNOWN_FEATURE = "unknown_feature"


class Lookup(NamedTuple):
    """The answer for one (feature_type, entity_id).

    `value` is the value's JSON encoding (as stored); `error` is None on success, else one of
    NOT_FOUND or UNKNOWN_FEATURE. (A NamedTuple: training builds up to 10,000 per request.)
    """

    feature_type: str
    entity_id: str
    value: bytes | None = None
    computed_at: int | None = None
    error: str | None = None
    as_of: datetime | None = None  # the instant of an as-of value (naive UTC)
    stale: bool = False  # older than its feature's max age, served because the warehouse failed


class FeatureServer:
    """Looks up feature values for inference and training."""

    def __init__(self, registry: Registry, store: OnlineStore, warehouse: Warehouse,
                 max_ages: dict[str, int | None] | None = None) -> None:
        """`max_ages`: {feature_type: seconds, or None for no max age} (freshness.max_ages)."""
        self.registry = registry
        self.store = store
        self.warehouse = warehouse
        self._known = frozenset(registry.feature_types())
        self.max_ages = dict(max_ages or {})
        self._limits = {ft: age for ft, age in self.max_ages.items() if age is not None}
        self._warehouse_failed_at = float("-inf")  # monotonic time of the last failed recomputation

    def lookup(self, requests: Sequence[tuple[str, str] | tuple[str, str, datetime | None]]) -> list[Lookup]:
        """The value of each (feature_type, entity_id) or (feature_type, entity_id, as_of), in
        request order.

        Cached values come from one Redis round trip. The misses are computed from the warehouse
        with one query per feature type for all of its missing ids, stored, and returned. Items
        with an `as_of` instant (naive UTC) are computed from the warehouse as it was at that
        instant, one statement per feature type for all of them whatever their instants; they are
        not stored (the online store holds current values).

        Raises:
            StoreUnavailable: the online store failed.
            WarehouseUnavailable: a miss had to be computed and the warehouse failed.
        """
        results: list[Lookup | None] = [None] * len(requests)
        to_read: list[int] = []
        as_of: dict[str, list[tuple[int, int, datetime]]] = {}
        known = self._known
        parse_id = Entity.parse_id
        for i, request in enumerate(requests):
            feature_type, entity_id = request[0], request[1]
            instant = request[2] if len(request) > 2 else None
            if feature_type not in known:
                results[i] = Lookup(feature_type, entity_id, error=UNKNOWN_FEATURE, as_of=instant)
            elif (number := parse_id(entity_id)) is None:
                # Not the decimal form of a 64-bit id: no row can have it, and no key is read.
                results[i] = Lookup(feature_type, entity_id, error=NOT_FOUND, as_of=instant)
            elif instant is not None:
                as_of.setdefault(feature_type, []).append((i, number, instant))
            else:
                to_read.append(i)

        cached = self.store.read([requests[i][:2] for i in to_read]) if to_read else []
        hits = 0
        misses: dict[str, list[int]] = {}
        stale: dict[int, tuple[bytes, int]] = {}  # position -> the cached value past its max age
        max_ages, now = self._limits, now_seconds()
        for i, hit in zip(to_read, cached, strict=True):
            feature_type, entity_id = requests[i][0], requests[i][1]
            if hit is None:
                misses.setdefault(feature_type, []).append(i)
            elif feature_type in max_ages and now - hit[1] > max_ages[feature_type]:
                stale[i] = hit
                misses.setdefault(feature_type, []).append(i)
            else:
                hits += 1
                results[i] = Lookup(feature_type, entity_id, hit[0], hit[1])
        metrics.count_values("cache", hits)
        metrics.count_values("expired", len(stale))

        for feature_type, positions in misses.items():
            feature = self.registry.get(feature_type)
            computed_at = now_seconds()
            only_stale = all(i in stale for i in positions)
            values, read_at = None, None
            if not only_stale or time.monotonic() - self._warehouse_failed_at >= STALE_RETRY_SECONDS:
                try:
                    values, read_at = self.warehouse.compute_at(feature, (int(requests[i][1]) for i in positions))
                except WarehouseUnavailable:
                    if not only_stale:
                        raise
                    self._warehouse_failed_at = time.monotonic()
            if values is None:  # every one is stale, and the warehouse cannot recompute them now
                metrics.count_values("stale", len(positions))
                for i in positions:
                    results[i] = Lookup(feature_type, requests[i][1], *stale[i], stale=True)
                continue
            # Not over a value of a later read of the warehouse (a streamed change: ordering.py).
            self.store.write(feature_type, ((str(eid), v) for eid, v in values.items()), computed_at,
                             on_demand=True, position=read_at)
            metrics.count_values("on_demand", len(values))
            metrics.count_values("missing", len(positions) - len(values))
            for i in positions:
                entity_id = requests[i][1]
                value = values.get(int(entity_id))
                results[i] = (Lookup(feature_type, entity_id, error=NOT_FOUND) if value is None
                              else Lookup(feature_type, entity_id, value, computed_at))

        computed_at = now_seconds()
        computed = self.warehouse.compute_as_of_all([(self.registry.get(ft), items) for ft, items in as_of.items()])
        for (feature_type, items), values in zip(as_of.items(), computed, strict=True):
            metrics.count_values("as_of", len(values))
            for i, _, instant in items:
                value = values.get(i)
                results[i] = (Lookup(feature_type, requests[i][1], error=NOT_FOUND, as_of=instant) if value is None
                              else Lookup(feature_type, requests[i][1], value, computed_at, as_of=instant))
        return results  # type: ignore[return-value]

    def lookup_set(self, name: str, entity_id: str, as_of: datetime | None = None) -> list[Lookup] | None:
        """Every value of feature set `name` for one entity (in the set's order), or None when
        no feature set has that name. Cached values come from one Redis round trip; missing ones
        are computed on demand, as for lookup().

        Raises:
            StoreUnavailable, WarehouseUnavailable: as lookup().
        """
        feature_set = self.registry.feature_set(name)
        if feature_set is None:
            return None
        return self.lookup([(feature_type, entity_id, as_of) for feature_type in feature_set.feature_types])
