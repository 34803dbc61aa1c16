"""Which entities a batch of changes affects (streaming/apply.py, Applier.affected): the batch loop,
which compares each changed row once, held equal to the plain per-feature rule it replaced (below:
for each feature reading the table, skip an update that leaves every column it reads as it was,
else take the route column of the old and the new row, directly or through the lookups)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from feature_store.features import REGISTRY
from feature_store.lineage import lineage
from feature_store.streaming.apply import Affected, Applier
from feature_store.streaming.decoding import DELETE, INSERT, TOAST_UNCHANGED, TRUNCATE, UPDATE, Change, Transaction

COLUMNS = {
    "users": ("id", "email", "created_at"),
    "quotes": ("id", "user_id", "premium_cents", "created_at", "bound_at"),
    "policies": ("id", "user_id", "quote_id", "status", "created_at"),
    "payment_transactions": ("id", "policy_id", "amount_cents", "payment_type", "status", "created_at"),
    "claims": ("id", "user_id"),  # read by no feature
}


class Lookups:
    """A warehouse whose lookups reach entity `value * 10` from each looked-up value."""

    def __init__(self, url: str = "postgresql://feature-store@warehouse/test") -> None:
        self.url = url
        self.statements: list = []

    def select_ids(self, statements):
        self.statements.extend(statement for statement, _ in statements)
        return [{value * 10 for value in params["values"]} for _, params in statements]


_LINEAGES = [(feature, lineage(feature)) for feature in REGISTRY]


def plain_affected(transactions, warehouse: Lookups) -> Affected:
    """The plain rule, one feature at a time."""
    found = Affected()
    lookups: dict = {}
    lookup_features: dict = {}
    for transaction in transactions:
        for change in transaction.changes:
            for feature, derived in _LINEAGES:
                if change.kind == TRUNCATE:
                    if any(table in derived.tables for table in change.tables):
                        found.refresh.add(feature.feature_type)
                    continue
                if change.table not in derived.tables:
                    continue
                old, new = change.old, change.new
                read = derived.columns[change.table]
                if old is not None and new is not None and all(old.get(c) == new.get(c) for c in read):
                    continue
                route = derived.route(change.table)
                if route is None:
                    found.refresh.add(feature.feature_type)
                    continue
                values = {row.get(route.column) for row in (old, new) if row is not None} - {None, TOAST_UNCHANGED}
                if route.direct:
                    found.entities.setdefault(feature.feature_type, set()).update(values)
                elif values:
                    lookups.setdefault(route, set()).update(values)
                    lookup_features.setdefault(route, set()).add(feature.feature_type)
    routes = list(lookups)
    for route, ids in zip(routes, warehouse.select_ids([(None, {"values": sorted(lookups[r])}) for r in routes]),
                          strict=True):
        for feature_type in lookup_features[route]:
            found.entities.setdefault(feature_type, set()).update(ids)
    for feature_type in found.refresh:
        found.entities.pop(feature_type, None)
    return found


_ID = st.one_of(st.integers(1, 6), st.none())  # ids and join keys (bigint; null only where the schema allows)
_VALUE = st.one_of(st.integers(1, 6), st.sampled_from(["a", "b", "failed", "succeeded"]), st.none(),
                   st.just(TOAST_UNCHANGED))


@st.composite
def _row(draw, table: str, old: bool) -> dict:
    row = {column: draw(_ID if column == "id" or column.endswith("_id") else _VALUE) for column in COLUMNS[table]}
    if old:  # old rows leave out their null columns
        row = {column: value for column, value in row.items() if value is not None}
    return row


@st.composite
def _change(draw) -> Change:
    table = draw(st.sampled_from(sorted(COLUMNS)))
    kind = draw(st.sampled_from([INSERT, UPDATE, UPDATE, UPDATE, DELETE, TRUNCATE]))
    if kind == TRUNCATE:
        tables = tuple(draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=2, unique=True)))
        return Change(tables[0], kind, tables=tables)
    old = draw(_row(table, True)) if kind in (UPDATE, DELETE) else None
    new = draw(_row(table, False)) if kind in (INSERT, UPDATE) else None
    if kind == UPDATE and draw(st.booleans()):  # an update of a few columns only
        new = {**{c: v for c, v in old.items()}, **{c: v for c, v in new.items() if draw(st.booleans())}}
    return Change(table, kind, old=old, new=new)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_change(), max_size=6), max_size=5))
def test_the_batch_loop_equals_the_plain_rule(batches):
    transactions = [Transaction(xid=i, changes=changes) for i, changes in enumerate(batches)]
    fast = Applier(REGISTRY, Lookups(), None).affected(transactions)
    plain = plain_affected(transactions, Lookups())
    assert fast.refresh == plain.refresh
    assert {k: v for k, v in fast.entities.items() if v} == {k: v for k, v in plain.entities.items() if v}


def test_lookups_bind_one_array_on_postgresql_and_an_in_list_elsewhere():
    change = Change("payment_transactions", UPDATE, old={"id": 1, "policy_id": 2, "status": "failed"},
                    new={"id": 1, "policy_id": 3, "status": "failed"})
    for url, dialect, expected in (("postgresql://x@y/z", postgresql.dialect(), "= ANY ("),
                                   ("sqlite:///w.db", sqlite.dialect(), " IN (")):
        warehouse = Lookups(url)
        found = Applier(REGISTRY, warehouse, None).affected([Transaction(xid=1, changes=[change])])
        assert found.entities["user_failed_transaction_count"] == {20, 30}
        (statement,) = warehouse.statements  # one lookup for both user features (one route)
        assert expected in str(statement.compile(dialect=dialect))
