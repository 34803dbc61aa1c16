"""Typed, read-only SQLAlchemy models of the warehouse tables (schema.sql is the DDL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

_TIMESTAMP_TEXT = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\s*"
)


def parse_timestamp(text: str) -> datetime:
    """A naive UTC datetime from timestamp text as SQLite files hold it.

    Accepts a space or `T` separator, any number of fraction digits (truncated to microseconds),
    unpadded fields, and a trailing `Z` or offset (converted to UTC).

    Raises:
        ValueError: the text is not a timestamp.
    """
    match = _TIMESTAMP_TEXT.fullmatch(text)
    if not match:
        raise ValueError(f"not a timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                      int((fraction or "0")[:6].ljust(6, "0")))
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return moment


class Timestamp(TypeDecorator):
    """TIMESTAMP (UTC, no zone). SQLite keeps text, read here leniently (see parse_timestamp);
    other dialects return datetimes, made naive UTC if they carry a zone."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(String() if dialect.name == "sqlite" else DateTime())

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)  # the common forms, in C
            except ValueError:
                return parse_timestamp(value)
        if value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value


SQLITE_INSTANT_FUNCTION = "feature_store_instant"


def sqlite_instant_text(text):
    """A SQLite timestamp's text as `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (parse_timestamp's rules),
    or None when it is not a timestamp. Registered on SQLite connections for the forms SQL cannot
    normalize itself (offsets, unpadded fields, a date alone...)."""
    if text is None:
        return None
    try:
        return parse_timestamp(str(text)).isoformat(sep=" ", timespec="microseconds")
    except ValueError:
        return None


class comparable(FunctionElement):
    """A timestamp column in a form that compares as time does: the column itself where
    timestamps are typed; on SQLite (text in several forms) the normalized text
    `YYYY-MM-DD HH:MM:SS.ffffff` in UTC: in SQL for the common forms (`YYYY-MM-DD HH:MM:SS` or
    with a `T`, any fraction, a trailing `Z`), else through parse_timestamp (a registered
    function), so every form the reader accepts compares correctly."""

    type = String()
    inherit_cache = True
    name = "comparable"


@compiles(comparable)
def _comparable_default(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(comparable, "sqlite")
def _comparable_sqlite(element, compiler, **kw):
    col = compiler.process(element.clauses, **kw)
    # The canonical form (`YYYY-MM-DD HH:MM:SS`, up to six fraction digits) already compares as
    # time does with the normalized text (a shorter fraction is a prefix), so it is used as it is;
    # the cheap test below keeps every other form (a T, a Z, an offset, a comma, unpadded fields)
    # for the normalizations after it.
    canonical = (f"(length({col}) BETWEEN 19 AND 26 AND substr({col}, 11, 1) = ' ' "
                 f"AND (length({col}) = 19 OR substr({col}, 20, 1) = '.') AND instr({col}, 'Z') = 0 "
                 f"AND instr({col}, '+') = 0 AND instr({col}, ',') = 0 AND instr(substr({col}, 11), '-') = 0)")
    return f"(CASE WHEN {canonical} THEN {col} ELSE {_normalized_sqlite(col)} END)"


def _normalized_sqlite(col: str) -> str:
    fraction = f"rtrim(substr({col}, 21), 'Z')"
    common = (f"({col} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][ T][0-9][0-9]:[0-9][0-9]:[0-9][0-9]*' "
              f"AND (rtrim(substr({col}, 20), 'Z') = '' OR (substr({col}, 20, 1) = '.' AND {fraction} <> '' "
              f"AND {fraction} NOT GLOB '*[^0-9]*')))")
    normalized = (f"substr({col}, 1, 10) || ' ' || substr({col}, 12, 8) || '.' || "
                  f"substr({fraction} || '000000', 1, 6)")
    return f"CASE WHEN {common} THEN {normalized} ELSE {SQLITE_INSTANT_FUNCTION}({col}) END"


class earliest(FunctionElement):
    """MIN() of a timestamp column, right on every dialect.

    On SQLite the column is text and MIN compares characters, which is only right while every
    row has one format; there it is the MIN of comparable() (UTC, fixed width), so offsets and
    every form the reader accepts count right. Rows that are no timestamp are ignored.
    """

    type = Timestamp()
    inherit_cache = True
    name = "earliest"


@compiles(earliest)
def _earliest_default(element, compiler, **kw):
    return f"MIN({compiler.process(element.clauses, **kw)})"


@compiles(earliest, "sqlite")
def _earliest_sqlite(element, compiler, **kw):
    # The minimum of the normalized (UTC, fixed-width) text: right whatever the rows' forms.
    return f"MIN({compiler.process(comparable(*element.clauses), **kw)})"


class Base(DeclarativeBase):
    pass


# Event time, as as-of values read it (warehouse/statements.py): a row exists from its table's
# EXISTS_FROM column on; an EVENT column's value is unknown before its own time.
EXISTS_FROM = {"event_time": "exists_from"}
EVENT = {"event_time": "event"}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(Timestamp, info=EXISTS_FROM)


class Quote(Base):
    __tablename__ = "quotes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    premium_cents: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp, info=EXISTS_FROM)
    bound_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True, info=EVENT)


class Policy(Base):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    quote_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("quotes.id"))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(Timestamp, info=EXISTS_FROM)


class PaymentTransaction(Base):
    __tablename__ = "payment_transactions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    policy_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("policies.id"))
    amount_cents: Mapped[int] = mapped_column(Integer)
    payment_type: Mapped[str] = mapped_column(String(20))
    # Kept as stored: the warehouse records no history of statuses, so as-of values read today's.
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(Timestamp, info=EXISTS_FROM)
