"""The one statement builder behind every feature value: a feature's `query(scope)` is written
once, and the scope decides which rows it reads.

- `Current(restrict)`: the warehouse as it is now, for every entity (batch extraction) or for the
  ids `restrict` admits (on-demand computation).
- `AsOf(spine)`: the warehouse as its rows define it at an instant, for a spine of
  (position, entity id, instant) rows, whatever their instants, in one statement: the entity's
  row must exist at its instant, every joined row must exist at it (`on`), and a column that is an
  event of its own (`bound_at`) reads as NULL until its time has come. A row exists from its
  table's existence column on. Which columns those are is declared on the models
  (`info={"event_time": ...}` in warehouse/models.py), not in the features.

The spine travels with the statement: an unnest of arrays on PostgreSQL, `json_each` over one
JSON parameter on SQLite (no temporary table: warehouse sessions are read-only).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import orjson
from sqlalchemy import BigInteger, Integer, and_, bindparam, case, cast, column, func, literal_column, select, union
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.selectable import AliasedReturnsRows, TableClause
from sqlalchemy.sql.visitors import iterate, replacement_traverse
from sqlalchemy.types import String

from feature_store.warehouse.models import Timestamp, comparable

EXISTS_FROM = "exists_from"  # the column from which a table's row exists (models.EXISTS_FROM)
EVENT = "event"  # a column whose value is itself an event: unknown before its time


class Current:
    """The warehouse now: every entity, or the ids `restrict(id_column)` admits."""

    def __init__(self, restrict=None) -> None:
        self.restrict = restrict

    def select(self, model, *inputs):
        """SELECT (entity id, *inputs) FROM the entity's table: one row per existing entity."""
        statement = select(model.id, *inputs).select_from(model)
        return statement if self.restrict is None else statement.where(self.restrict(model.id))

    def key(self, model):
        """The column each result row is keyed by (to group by)."""
        return model.id

    def on(self, model, condition):
        """The condition of a join to `model`."""
        return condition

    def event(self, column):
        """An event column (`quotes.bound_at`) where the query uses it outside its selected inputs
        (a join or a filter): as of an instant, NULL before its time. (Selected inputs get this
        by themselves.)"""
        return column


class AsOf(Current):
    """The warehouse at each spine row's instant; result rows are keyed by spine position."""

    def __init__(self, spine) -> None:
        super().__init__()
        self.spine = spine
        self.as_of = spine.c.as_of

    def select(self, model, *inputs):
        exists = and_(model.id == self.spine.c.id, self._existed(model))
        return (select(self.spine.c.pos, *(self._events_known(expression) for expression in inputs))
                .select_from(self.spine.join(model.__table__, exists)))

    def key(self, model):
        return self.spine.c.pos

    def on(self, model, condition):
        return and_(condition, self._existed(model))

    def event(self, column):
        return self._events_known(column)

    def _existed(self, model):
        return comparable(_event_column(model, EXISTS_FROM)) <= self.as_of

    def guarded(self, column):
        """An event column as of the spine's instant: its value once its time has come, NULL
        before. A value that is no timestamp at all is passed on as it is, so reading it fails
        (502) as the current value's does, instead of passing for "not yet"."""
        known = comparable(column)
        return case((known <= self.as_of, column), (and_(column.isnot(None), known.is_(None)), column), else_=None)

    def _events_known(self, expression):
        expression = expression.__clause_element__() if hasattr(expression, "__clause_element__") else expression

        def replace(element):
            if getattr(element, "info", {}).get("event_time") == EVENT and hasattr(element, "table"):
                return self.guarded(element)
            return None

        return replacement_traverse(expression, {}, replace)


def _event_column(model, kind: str):
    for col in model.__table__.columns:
        if col.info.get("event_time") == kind:
            return col
    raise ValueError(f"table {model.__tablename__} declares no {kind} column (see warehouse/models.py)")


_PG_EPOCH = datetime(2000, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


def _pg_array(integers: Sequence[int]) -> str:
    """Integers as a PostgreSQL array literal."""
    return "{" + ",".join(map(str, integers)) + "}"


def sqlite_instant(moment: datetime) -> str:
    """An instant as SQLite's comparable() text."""
    return moment.isoformat(sep=" ", timespec="microseconds")


def spine(dialect: str, rows: Sequence[tuple[int, int, datetime]]):
    """The (pos, id, as_of) rows as a FROM clause named `spine`, with the values bound.

    Returns:
        (from clause, bind parameters)
    """
    return spine_clause(dialect), spine_params(dialect, rows)


def spine_clause(dialect: str):
    """The FROM clause named `spine` whose rows spine_params() binds: the same for every spine,
    so a feature's as-of statement is built and compiled once (as_of_query)."""
    if dialect == "postgresql":
        # Each column is bound as one array literal of text ('{1,2,...}'), and each instant as its
        # whole microseconds from 2000-01-01 (an integer, exact for any year), made a timestamp
        # again in the statement: psycopg dumps a list of 50,000 datetimes in about 150 ms and the
        # server parses timestamp text at about 1 us each, against about 20 ms for the integers'
        # text both ways (BENCHMARKS.md, section 9).
        arrays = func.unnest(
            cast(bindparam("spine_pos", type_=String()), ARRAY(Integer)),
            cast(bindparam("spine_id", type_=String()), ARRAY(BigInteger)),
            cast(bindparam("spine_as_of", type_=String()), ARRAY(BigInteger)),
        ).table_valued(column("pos", Integer), column("id", BigInteger), column("us", BigInteger))
        unnested = arrays.render_derived(name="spine_us")
        # Days and the rest apart: an interval's product goes through a double, exact only below
        # 2**53, and a day count or a day's microseconds stay far below it.
        # (SQL's / and % both truncate, so days * 1 day + rest * 1 us is the instant.)
        us = unnested.c.us
        as_of = literal_column(f"TIMESTAMP '{_PG_EPOCH.isoformat(sep=' ')}' + ({us} / {_DAY_US}) * INTERVAL '1 day' "
                               f"+ ({us} % {_DAY_US}) * INTERVAL '1 microsecond'", Timestamp())
        return select(unnested.c.pos, unnested.c.id, as_of.label("as_of")).select_from(unnested).subquery("spine")
    if dialect == "sqlite":
        each = func.json_each(bindparam("spine", type_=String())).table_valued("value")
        value = each.c.value
        return select(func.json_extract(value, "$[0]").label("pos"),
                      func.json_extract(value, "$[1]").label("id"),
                      func.json_extract(value, "$[2]").label("as_of")).select_from(each).subquery("spine")
    raise ValueError(f"as-of values are computed on SQLite and PostgreSQL warehouses, not {dialect}")


def spine_params(dialect: str, rows: Sequence[tuple[int, int, datetime]]) -> dict[str, str]:
    """The bind parameters of spine_clause(dialect) for these (pos, id, naive UTC instant) rows."""
    if dialect == "postgresql":
        return {"spine_pos": _pg_array([r[0] for r in rows]), "spine_id": _pg_array([r[1] for r in rows]),
                "spine_as_of": _pg_array([(r[2] - _PG_EPOCH) // _MICROSECOND for r in rows])}
    if dialect == "sqlite":
        return {"spine": orjson.dumps([[pos, entity_id, sqlite_instant(moment)] for pos, entity_id, moment in rows])
                .decode()}
    raise ValueError(f"as-of values are computed on SQLite and PostgreSQL warehouses, not {dialect}")


def as_of_query(feature, dialect: str):
    """The statement computing `feature` for every row of spine_clause(dialect): rows of
    (pos, *inputs), one per spine row whose entity existed at its instant."""
    return feature.query(AsOf(spine_clause(dialect)))


def as_of_statement(feature, dialect: str, rows: Sequence[tuple[int, int, datetime]]):
    """One statement computing `feature` for every spine row (pos, entity id, naive UTC instant).

    Returns:
        (statement, bind parameters): rows of (pos, *inputs), one per spine row whose entity
        existed at its instant.
    """
    return as_of_query(feature, dialect), spine_params(dialect, rows)


def event_times_query(feature):
    """The statement of every (entity id, instant) at which `feature`'s value of an entity can
    change, or None when its statement is beyond what this derives them for (an alias, a
    subquery: then nothing is indexed, and its as-of values come from its statement alone).

    As of an instant, the statement reads the rows that exist by then and the event columns whose
    time has come (AsOf), and nothing else depends on the instant: so a value changes only at an
    existence or event instant of a row the statement joins. These are read from the very
    statement batch extraction runs (`Current()`), its joins and their conditions kept (a payment
    that is not `failed` is no instant of the failed count), one SELECT per such column of every
    table in it, together as one UNION. Rows of (id, instant), instants non-NULL.
    """
    statement = feature.query(Current())
    key = statement.selected_columns[0]
    tables: list[TableClause] = []
    for clause in statement.get_final_froms():
        for element in iterate(clause):
            if isinstance(element, AliasedReturnsRows):
                return None
            if isinstance(element, TableClause) and element not in tables:
                tables.append(element)
    instants = [col for table in tables for col in table.columns
                if col.info.get("event_time") in (EXISTS_FROM, EVENT)]
    if not instants:
        return None
    return union(*(statement.with_only_columns(key.label("id"), instant.label("at")).group_by(None).order_by(None)
                   .where(instant.isnot(None)) for instant in instants))
