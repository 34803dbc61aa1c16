"""From committed row changes to fresh values in the online store.

Which values a change affects comes from the features' lineage (feature_store/lineage.py: how a
row of each table reaches the feature's entity, derived from the feature's own statement), never
from a second, hand-written copy of each feature's logic:

- a changed row of a table a feature reads names entities through its route: directly (its
  `quotes.id`, its `policies.user_id`) or through lookups (`payment_transactions.policy_id` ->
  `policies.id` -> `policies.user_id`), run as one statement per route for the whole batch;
- both the old and the new row count (REPLICA IDENTITY FULL logs the old one), so a policy given
  to another user changes both users;
- lookups read the warehouse as it is now: a row that no longer links (its policy deleted) is
  reached through the change that unlinked it, which is in the stream too (old row);
- an update that leaves every column a feature reads as it was affects nothing of it;
- a table with no join-key path to the entity, or a TRUNCATE, may affect any entity: those
  features are refreshed by an extraction run instead.

The affected entities are then recomputed set-based, through the same compute path on-demand
values take (one statement per feature for all of them), and written in one pipeline: the new
values, and the removal of the values of entities that no longer exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from feature_store.lineage import Route, lineage
from feature_store.online_store import OnlineStore, now_seconds
from feature_store.registry import Feature, Registry
from feature_store.streaming.decoding import TOAST_UNCHANGED, TRUNCATE, Transaction
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass
class Affected:
    """What a batch of changes touches: entity ids per feature type, and the feature types that
    need a full extraction run (any of their entities may have changed)."""

    entities: dict[str, set[int]] = field(default_factory=dict)
    refresh: set[str] = field(default_factory=set)

    def count(self) -> int:
        return sum(len(ids) for ids in self.entities.values())


@dataclass(frozen=True)
class Applied:
    """The outcome of one batch: values written and removed, features sent to an extraction run."""

    written: int = 0
    removed: int = 0
    refresh: tuple[str, ...] = ()


class Applier:
    """Applies batches of committed transactions of the warehouse to the online store.

    Args:
        start_refresh: called with feature types whose every entity may have changed (an
            extraction run of them is started or joined).
        wait_visible: called with a batch's transaction ids before its values are recomputed;
            returns once the warehouse's snapshots see them all (Slot.wait_visible).
    """

    def __init__(self, registry: Registry, warehouse: Warehouse, store: OnlineStore, *,
                 start_refresh: Callable[[list[str]], object] | None = None,
                 wait_visible: Callable[[Iterable[int]], None] | None = None) -> None:
        self.registry = registry
        self.wait_visible = wait_visible
        self.warehouse = warehouse
        self.store = store
        self.start_refresh = start_refresh
        self.features_by_table: dict[str, list[Feature]] = {}
        # Per table, what each feature reading it needs of a changed row: the columns it reads and
        # the row's route to its entities (derived once: a batch looks them up per change).
        self._readers: dict[str, list[tuple[str, tuple[str, ...], Route | None]]] = {}
        for feature in registry:
            derived = lineage(feature)
            for table in derived.tables:
                self.features_by_table.setdefault(table, []).append(feature)
                self._readers.setdefault(table, []).append(
                    (feature.feature_type, tuple(derived.columns[table]), derived.route(table)))

    @property
    def tables(self) -> list[str]:
        """Every warehouse table some feature reads: the tables the slot follows."""
        return sorted(self.features_by_table)

    def affected(self, transactions: Sequence[Transaction]) -> Affected:
        """The entities the changes of `transactions` affect, per feature type.

        Raises:
            WarehouseUnavailable: a lookup through other tables failed.
        """
        found = Affected()
        lookups: dict[Route, set] = {}
        lookup_features: dict[Route, list[str]] = {}
        for transaction in transactions:
            for change in transaction.changes:
                if change.kind == TRUNCATE:
                    for table in change.tables:
                        found.refresh.update(f.feature_type for f in self.features_by_table.get(table, ()))
                    continue
                old, new = change.old, change.new
                for feature_type, read, route in self._readers.get(change.table, ()):
                    if old is not None and new is not None and all(old.get(c) == new.get(c) for c in read):
                        continue  # nothing this feature reads changed
                    if route is None:
                        found.refresh.add(feature_type)
                        continue
                    values = {row.get(route.column) for row in (old, new) if row is not None}
                    values.discard(None)
                    values.discard(TOAST_UNCHANGED)
                    if route.direct:
                        found.entities.setdefault(feature_type, set()).update(values)
                    elif values:
                        lookups.setdefault(route, set()).update(values)
                        lookup_features.setdefault(route, [])
                        if feature_type not in lookup_features[route]:
                            lookup_features[route].append(feature_type)
        if lookups:
            routes = list(lookups)
            reached = self.warehouse.select_ids([(route.statement(), {"values": sorted(lookups[route])})
                                                 for route in routes])
            for route, ids in zip(routes, reached, strict=True):
                for feature_type in lookup_features[route]:
                    found.entities.setdefault(feature_type, set()).update(ids)
        for feature_type in found.refresh:
            found.entities.pop(feature_type, None)
        return found

    def apply(self, transactions: Sequence[Transaction]) -> Applied:
        """Recompute and store every value the changes of `transactions` affect.

        Idempotent: applying a batch again (after a crash before the slot was confirmed) writes
        the same values, since they are recomputed from the warehouse, never incremented.

        Each value (and each removal: a tombstone) lands only where the stored value is not of a
        later warehouse read (online_store/ordering.py), in one pipeline for the whole batch.

        Raises:
            WarehouseUnavailable: the warehouse failed (nothing was written).
            StoreUnavailable: Redis failed (some values may be fresh already; none is older).
        """
        found = self.affected(transactions)
        if self.wait_visible is not None:
            self.wait_visible(t.xid for t in transactions)
        computed_at = now_seconds()
        work = []
        for feature_type, ids in found.entities.items():
            if ids:
                # Read after the batch's changes were decoded, so its position is later than
                # theirs: a run that read before them cannot overwrite these (ordering.py).
                values, read_at = self.warehouse.compute_at(self.registry.get(feature_type), ids, batch=True)
                work.append((feature_type, list(values.items()), [i for i in ids if i not in values], read_at))
        written, removed = self.store.apply_changes(work, computed_at)
        if found.refresh and self.start_refresh is not None:
            self.start_refresh(sorted(found.refresh))
        return Applied(written, removed, tuple(sorted(found.refresh)))
