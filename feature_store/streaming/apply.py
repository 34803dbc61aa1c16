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
values take (one statement per feature for all of them), and written on one Redis connection (a
feature's writes sent as soon as it is computed, every reply read at the end): the new values, and
the removal of the values of entities that no longer exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

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
        self._readers: dict[str, list[tuple[str, frozenset[str], Route | None]]] = {}
        for feature in registry:
            derived = lineage(feature)
            for table in derived.tables:
                self.features_by_table.setdefault(table, []).append(feature)
                self._readers.setdefault(table, []).append(
                    (feature.feature_type, frozenset(derived.columns[table]), derived.route(table)))
        self._arrays = make_url(warehouse.url).get_backend_name() == "postgresql"
        self._statements: dict[tuple[Route, bool], object] = {}

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
        entities = found.entities
        lookups: dict[Route, set] = {}
        lookup_features: dict[Route, list[str]] = {}
        readers = self._readers
        for transaction in transactions:
            for change in transaction.changes:
                if change.kind == TRUNCATE:
                    for table in change.tables:
                        found.refresh.update(f.feature_type for f in self.features_by_table.get(table, ()))
                    continue
                table_readers = readers.get(change.table)
                if not table_readers:
                    continue
                old, new = change.old, change.new
                changed = None
                if old is not None and new is not None:
                    # The columns whose value differs (a column absent from a row is NULL): the
                    # pairs of one row only, then compared as the rows' values.
                    changed = {c for c, _ in old.items() ^ new.items() if old.get(c) != new.get(c)}
                    if not changed:
                        continue
                for feature_type, read, route in table_readers:
                    if changed is not None and changed.isdisjoint(read):
                        continue  # nothing this feature reads changed
                    if route is None:
                        found.refresh.add(feature_type)
                        continue
                    column = route.column
                    values = [value for value in (None if old is None else old.get(column),
                                                  None if new is None else new.get(column))
                              if value is not None and value is not TOAST_UNCHANGED]
                    if route.direct:
                        target = entities.get(feature_type)
                        if target is None:
                            target = entities[feature_type] = set()
                        target.update(values)
                    elif values:
                        target = lookups.get(route)
                        if target is None:
                            target = lookups[route] = set()
                            lookup_features[route] = []
                        target.update(values)
                        if feature_type not in lookup_features[route]:
                            lookup_features[route].append(feature_type)
        if lookups:
            routes = list(lookups)
            reached = self.warehouse.select_ids([self._lookup(route, lookups[route]) for route in routes])
            for route, ids in zip(routes, reached, strict=True):
                for feature_type in lookup_features[route]:
                    found.entities.setdefault(feature_type, set()).update(ids)
        for feature_type in found.refresh:
            found.entities.pop(feature_type, None)
        return found

    def _lookup(self, route: Route, values: set) -> tuple[object, dict]:
        """The (statement, parameters) of one route's lookup for a batch's `values`: on
        PostgreSQL the values bound as one array, the statement built once per route."""
        values = sorted(values)
        as_array = self._arrays and all(type(value) is int for value in values)
        statement = self._statements.get((route, as_array))
        if statement is None:
            statement = self._statements[(route, as_array)] = route.statement(as_array=as_array)
        return statement, {"values": values}

    def apply(self, transactions: Sequence[Transaction]) -> Applied:
        """Recompute and store every value the changes of `transactions` affect.

        Idempotent: applying a batch again (after a crash before the slot was confirmed) writes
        the same values, since they are recomputed from the warehouse, never incremented.

        Each value (and each removal: a tombstone) lands only where the stored value is not of a
        later warehouse read (online_store/ordering.py); Redis runs one feature's writes while the
        next feature is computed (OnlineStore.change_writer).

        Raises:
            WarehouseUnavailable: the warehouse failed (the features computed before it may be written
                already, as a retry of the batch writes them again; none is older).
            StoreUnavailable: Redis failed (some values may be fresh already; none is older).
        """
        found = self.affected(transactions)
        if self.wait_visible is not None:
            self.wait_visible(t.xid for t in transactions)
        computed_at = now_seconds()
        # Each feature's writes go to Redis as soon as it is computed, and Redis runs them while
        # the next one is (the replies are read at the end): BENCHMARKS.md, section 14.
        with self.store.change_writer(computed_at) as (write, counts):
            for feature_type, ids in found.entities.items():
                if ids:
                    # Read after the batch's changes were decoded, so its position is later than
                    # theirs: a run that read before them cannot overwrite these (ordering.py).
                    values, read_at = self.warehouse.compute_at(self.registry.get(feature_type), ids, batch=True)
                    write(feature_type, list(values.items()), [i for i in ids if i not in values], read_at)
        written, removed = counts["written"], counts["removed"]
        if found.refresh and self.start_refresh is not None:
            self.start_refresh(sorted(found.refresh))
        return Applied(written, removed, tuple(sorted(found.refresh)))
