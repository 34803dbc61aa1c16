"""Lineage: which warehouse tables and columns each feature reads, and how a row of each table
reaches the feature's entity, derived from the feature's declared statement (never written by hand,
so it cannot drift from what the feature computes): the one batch extraction runs
(`feature.query(Current())`). Its SQLAlchemy structure is walked (FROM clauses: tables, aliases,
joins and their ON clauses, subqueries and CTEs as statements of their own; the selected columns,
WHERE, GROUP BY, HAVING), and each table column gets its roles:

- `selected`: read by a selected expression (the entity key included);
- `joined_on`: one side of a column-to-column equality among the top-level conjuncts of an ON or
  WHERE clause (a join key: these equalities are also the edges of the paths below);
- `filtered_on`: any other use in an ON, WHERE or HAVING clause (`payment_transactions.status =
  'failed'` inside a join's ON is a filter, not a join key);
- `grouped_by`: read by a GROUP BY expression.

Paths: for every table read, the shortest chain of join-key equalities from that table to the
entity's key column, as steps `(table, column, to_table, to_column)`; `()` for the entity table
itself (its key is `Lineage.entity_column`), None when no equality links it (a change to it may
then affect any entity). `Lineage.route(table)` turns a path into what a consumer of changed rows
needs (issue 12, real-time updates): the row's column that names the entity, and the lookups (with
a ready statement) when it does so only through other tables. Aliases of one table (a self-join)
are merged under its name. Imports only the registry and the warehouse layer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, any_, bindparam, select
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BooleanClauseList, ColumnClause, Label
from sqlalchemy.sql.selectable import AliasedReturnsRows, CompoundSelect, Join, Select, SelectBase, TableClause

from feature_store.registry import Feature, Registry
from feature_store.warehouse.statements import Current

ROLES = ("selected", "joined_on", "filtered_on", "grouped_by")


class Step(NamedTuple):
    """One join-key equality on a path: `table.column = to_table.to_column`."""
    table: str
    column: str
    to_table: str
    to_column: str


class Lookup(NamedTuple):
    """Rows of `table` whose `match` column equals the value in hand; their `take` column is the
    next value (the entity id after the last lookup)."""
    table: str
    match: str
    take: str


@dataclass(frozen=True)
class Route:
    """How a row of `table` names the entities it affects: the row's `column` holds the entity id
    itself when `lookups` is empty (`quotes.id`, `policies.user_id`); otherwise its value goes
    through the lookups in order (`payment_transactions.policy_id` -> policies where id = value ->
    their user_id)."""

    table: str
    column: str
    lookups: tuple[Lookup, ...]

    @property
    def direct(self) -> bool:  # the row's own column is the entity id
        return not self.lookups

    def statement(self, *, as_array: bool = False):
        """SELECT DISTINCT entity ids reached from the row values bound to the expanding parameter
        `values` (`connection.execute(route.statement(), {"values": [...]})`): one set-based
        statement for a whole batch of changed rows. ValueError for a direct route.

        as_array: `values` bound as one BIGINT array (`= ANY(:values)`), PostgreSQL only: a
        batch's thousands of values expanded into an IN list cost more to compile and send than
        the lookup itself (BENCHMARKS.md, section 14); integer values only."""
        if self.direct:
            raise ValueError(f"{self.table}.{self.column} is the entity id itself: there is nothing to look up")
        hops = [table_clause(lookup.table, column_clause(lookup.match), column_clause(lookup.take))
                .alias(f"lookup_{i}") for i, lookup in enumerate(self.lookups)]
        source = hops[0]
        for i in range(1, len(hops)):
            source = source.join(hops[i], hops[i].c[self.lookups[i].match] == hops[i - 1].c[self.lookups[i - 1].take])
        match = hops[0].c[self.lookups[0].match]
        restrict = (match == any_(bindparam("values", type_=ARRAY(BigInteger))) if as_array
                    else match.in_(bindparam("values", expanding=True)))
        return select(hops[-1].c[self.lookups[-1].take]).distinct().select_from(source).where(restrict)


@dataclass(frozen=True)
class Lineage:
    """What one feature reads (see the module docstring for the roles and paths).

    Attributes:
        feature_type: the feature it describes.
        entity_table, entity_column: the key the statement selects first (`users.id`).
        tables: the tables read, in the order the statement names them.
        columns: {table: {column: roles}} (roles in ROLES order), read-only.
        paths: {table: steps to the entity key, `()` for the entity table, None when unlinked}.
    """

    feature_type: str
    entity_table: str
    entity_column: str
    tables: tuple[str, ...]
    columns: MappingProxyType
    paths: MappingProxyType

    def reads(self, table: str, column: str | None = None) -> bool:
        """Whether the feature reads `table` (and, when given, that column of it in any role)."""
        return table in self.columns and (column is None or column in self.columns[table])

    def route(self, table: str) -> Route | None:
        """How a row of `table` names its entities (None when the table is not read, or no
        join-key path links it to the entity: then any entity may be affected)."""
        steps = self.paths.get(table)
        if steps is None:
            return None
        if not steps:
            return Route(table, self.entity_column, ())
        lookups, known = [], steps[0].to_column  # the column of steps[0].to_table whose value is in hand
        for step in steps[1:]:
            if step.column != known:
                lookups.append(Lookup(step.table, known, step.column))
            known = step.to_column
        if known != self.entity_column:
            lookups.append(Lookup(self.entity_table, known, self.entity_column))
        return Route(table, steps[0].column, tuple(lookups))

    def describe(self) -> dict[str, Any]:
        """A JSON-able form (discovery's `lineage` field)."""
        return {
            "entity": {"table": self.entity_table, "column": self.entity_column},
            "tables": list(self.tables),
            "columns": {t: {c: list(roles) for c, roles in columns.items()} for t, columns in self.columns.items()},
            "paths": {t: None if steps is None else [step._asdict() for step in steps]
                      for t, steps in self.paths.items()},
        }


class _Walk:
    """Collects tables, column roles and join-key equalities from a statement and those it nests."""

    def __init__(self) -> None:
        self.tables: list[str] = []
        self.roles: dict[str, dict[str, set[str]]] = {}
        self.edges: list[tuple[tuple[str, str], tuple[str, str]]] = []

    def statement(self, statement) -> None:
        if isinstance(statement, CompoundSelect):  # a UNION and the like: each of its SELECTs
            for part in statement.selects:
                self.statement(part)
        if not isinstance(statement, Select):
            return
        for from_clause in statement.get_final_froms():
            self.from_clause(from_clause)
        for expression in statement.selected_columns:
            self.expression(expression, "selected")
        # SQLAlchemy exposes WHERE publicly; GROUP BY and HAVING only as these attributes (2.x).
        # tests/test_lineage.py fails if an upgrade renames them (the roles would go missing).
        if statement.whereclause is not None:
            self.condition(statement.whereclause)
        for expression in statement._group_by_clauses:
            self.expression(expression, "grouped_by")
        for criterion in statement._having_criteria:
            self.condition(criterion)

    def from_clause(self, from_clause) -> None:
        if isinstance(from_clause, Join):
            self.from_clause(from_clause.left)
            self.from_clause(from_clause.right)
            self.condition(from_clause.onclause)
        elif isinstance(from_clause, TableClause):
            self.table(from_clause.name)
        elif isinstance(from_clause, AliasedReturnsRows):  # an aliased table, a subquery, a CTE
            inner = from_clause.element
            if isinstance(inner, TableClause):
                self.table(inner.name)
            elif isinstance(inner, SelectBase):
                self.statement(inner)

    def table(self, name: str) -> None:
        if name not in self.tables:
            self.tables.append(name)
        self.roles.setdefault(name, {})

    def condition(self, clause) -> None:
        for term in _conjuncts(clause):
            pair = _join_key(term)
            if pair is None:
                self.expression(term, "filtered_on")
                continue
            self.edges.append(pair)
            for table, column in pair:
                self.mark(table, column, "joined_on")

    def expression(self, expression, role: str) -> None:
        stack = [expression]
        while stack:
            element = stack.pop()
            if isinstance(element, SelectBase):  # a scalar or EXISTS subquery: roles of its own
                self.statement(element)
            elif isinstance(element, ColumnClause) and element.table is not None:
                source = _source(element)
                if source is not None:
                    self.mark(*source, role)
            else:
                stack.extend(element.get_children())

    def mark(self, table: str, column: str, role: str) -> None:
        self.table(table)
        self.roles[table].setdefault(column, set()).add(role)


def _conjuncts(clause):
    """The terms of a top-level AND (nested ANDs flattened); the clause itself otherwise."""
    if not (isinstance(clause, BooleanClauseList) and clause.operator is operators.and_):
        return [clause]
    return [term for inner in clause.clauses for term in _conjuncts(inner)]


def _join_key(term) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The two table columns of a `column = column` term, else None."""
    if not (isinstance(term, BinaryExpression) and term.operator is operators.eq):
        return None
    sides = [_source(side) if isinstance(side, ColumnClause) else None for side in (term.left, term.right)]
    return (sides[0], sides[1]) if None not in sides else None


def _source(column) -> tuple[str, str] | None:
    """(table, column) of the warehouse column an expression's column reads: through table aliases,
    and through a subquery's or CTE's selected column (a computed one reads no single column)."""
    table = column.table
    if isinstance(table, AliasedReturnsRows):
        inner = table.element
        if isinstance(inner, TableClause):
            return inner.name, column.name
        if isinstance(inner, Select):
            selected = inner.selected_columns.get(column.key)
            while isinstance(selected, Label):
                selected = selected.element
            return _source(selected) if isinstance(selected, ColumnClause) and selected.table is not None else None
        return None
    if isinstance(table, TableClause):
        return table.name, column.name
    return None


def _paths(tables, edges, entity_table: str) -> dict[str, tuple[Step, ...] | None]:
    adjacent: dict[str, list[Step]] = {}
    for (table, column), (to_table, to_column) in edges:
        if table != to_table:
            adjacent.setdefault(table, []).append(Step(table, column, to_table, to_column))
            adjacent.setdefault(to_table, []).append(Step(to_table, to_column, table, column))
    paths: dict[str, tuple[Step, ...] | None] = {}
    for start in tables:
        found: dict[str, tuple[Step, ...]] = {start: ()}
        queue = deque([start])
        while queue and entity_table not in found:
            here = queue.popleft()
            for step in adjacent.get(here, []):
                if step.to_table not in found:
                    found[step.to_table] = (*found[here], step)
                    queue.append(step.to_table)
        paths[start] = found.get(entity_table)
    return paths


# By identity, kept with the feature (so an id is never reused while cached): a declaration's
# fields need not be hashable. Two threads may both derive one lineage: the same result.
_CACHE: dict[int, tuple[Feature, Lineage]] = {}


def lineage(feature: Feature) -> Lineage:
    """The lineage of `feature`, derived from its batch statement (computed once per feature)."""
    cached = _CACHE.get(id(feature))
    if cached is not None and cached[0] is feature:
        return cached[1]
    statement = feature.query(Current())
    walk = _Walk()
    walk.statement(statement)
    key = next(iter(statement.selected_columns))
    entity = _source(key) if isinstance(key, ColumnClause) else None
    if entity is None:
        raise ValueError(f"{feature.feature_type}: the statement's first column is not the entity's key column")
    entity_table, entity_column = entity
    columns = {table: MappingProxyType({column: tuple(role for role in ROLES if role in roles)
                                        for column, roles in sorted(walk.roles[table].items())})
               for table in walk.tables}
    derived = Lineage(feature.feature_type, entity_table, entity_column, tuple(walk.tables),
                      MappingProxyType(columns), MappingProxyType(_paths(walk.tables, walk.edges, entity_table)))
    _CACHE[id(feature)] = (feature, derived)
    return derived


def features_reading(registry: Registry, table: str, column: str | None = None) -> list[Feature]:
    """The features of `registry` that read `table` (or that column of it, in any role), in
    declaration order: what a change to that table or column may affect."""
    return [feature for feature in registry if lineage(feature).reads(table, column)]
