"""test_decoding's text output, parsed into transactions of row changes.

The slot is read with the built-in `test_decoding` plugin and the options `include-xids`,
`include-timestamp` and `skip-empty-xacts` (see slot.py for why that plugin). Its rows are:

    BEGIN 727
    table public.policies: UPDATE: old-key: id[bigint]:300 user_id[bigint]:3 ... new-tuple: id[bigint]:300 ...
    table public.payment_transactions: DELETE: id[bigint]:3000 policy_id[bigint]:300 ...
    table public.users, public.quotes: TRUNCATE: (no-flags)
    COMMIT 727 (at 2026-12-01 20:39:56.953451+00)

A column is `name[type]:value`, the value `null`, `unchanged-toast-datum`, a bare number or
boolean, or a quoted literal (`'it''s'`). Old tuples (UPDATE's old-key, DELETE's row) leave out
their null columns, so a column absent there is NULL. With REPLICA IDENTITY FULL they carry the
whole old row; without it only the primary key (the process refuses to stream then: slot.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

INSERT, UPDATE, DELETE, TRUNCATE = "INSERT", "UPDATE", "DELETE", "TRUNCATE"
TOAST_UNCHANGED = object()  # an unchanged out-of-line value: test_decoding does not repeat it

# Types whose values test_decoding prints bare and that the store reads as integers (ids).
_INTEGER_TYPES = frozenset({"bigint", "integer", "smallint", "oid"})
_COLUMN = re.compile(r' ("(?:[^"]|"")+"|[^ \[]+)\[((?:[^\]\["]|"[^"]*"|\[\])+)\]:')
_HEADER = re.compile(r"table ([^:]+): (INSERT|UPDATE|DELETE|TRUNCATE):")
_COMMIT = re.compile(r"COMMIT(?: (\d+))?(?: \(at (.+)\))?$")


@dataclass
class Change:
    """One row change of one table; `old` and `new` map column names to values (None: NULL).

    `old` is set for UPDATE and DELETE (the row before), `new` for INSERT and UPDATE. A TRUNCATE
    names its tables in `tables` and carries no rows.
    """

    table: str
    kind: str
    old: dict | None = None
    new: dict | None = None
    tables: tuple[str, ...] = ()


@dataclass
class Transaction:
    """A committed transaction: its changes, in order, and where it ends in the WAL.

    `end_lsn` is the position of its COMMIT row as the slot reports it: confirming the slot up to
    it (pg_replication_slot_advance) means this transaction is never returned again.
    """

    xid: int | None
    end_lsn: int = 0
    committed_at: datetime | None = None
    changes: list[Change] = field(default_factory=list)


def parse_lsn(text: str) -> int:
    """`16/B374D848` as an integer (the position in bytes)."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    """An integer position as PostgreSQL writes an LSN (`16/B374D848`)."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def _name(text: str) -> str:
    """An identifier as test_decoding quotes it (quote_identifier), unquoted."""
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1].replace('""', '"')
    return text


def _table_name(qualified: str) -> str:
    """`public.users` (or `"My Schema"."T"`) -> the table's own name, unquoted."""
    name = _TABLE_NAMES.get(qualified)
    if name is None:
        parts = re.findall(r'"(?:[^"]|"")*"|[^.]+', qualified.strip())
        name = _name(parts[-1]) if parts else qualified
        if len(_TABLE_NAMES) < 1000:  # a few tables, named in every change: parsed once
            _TABLE_NAMES[qualified] = name
    return name


_TABLE_NAMES: dict[str, str] = {}


# One column in its common shape (an unquoted name, a type without brackets): the whole tuple is
# parsed by one regular expression, 3x faster than the general loop below (BENCHMARKS.md), which
# takes over for anything else (quoted names, array types). Any character the common shape does not
# cover is matched alone by the last alternative (its name is empty), which sends the tuple to the
# general loop: a check at C speed that the matches cover all of the text.
_FAST_COLUMN = re.compile(r""" ([^ \["]+)\[([^\]\[]+)\]:('(?:[^']|'')*'|[^ ]+)|[\s\S]""")


def parse_tuple(text: str) -> dict:
    """The columns of one printed tuple (` id[bigint]:1 email[character varying]:'a'`)."""
    found = _FAST_COLUMN.findall(text)
    columns = {name: (raw[1:-1].replace("''", "'") if raw[0] == "'" else None if raw == "null"
                      else TOAST_UNCHANGED if raw == "unchanged-toast-datum"
                      else int(raw) if type_name in _INTEGER_TYPES else raw)
               for name, type_name, raw in found if name}
    # Fewer columns than matches: a character outside the common shape (or a name twice).
    if len(columns) != len(found):
        return _parse_tuple(text)
    return columns


def _parse_tuple(text: str) -> dict:
    """parse_tuple's general case: a column at a time."""
    columns: dict = {}
    pos = 0
    length = len(text)
    while pos < length:
        match = _COLUMN.match(text, pos)
        if match is None:
            raise ValueError(f"unexpected test_decoding tuple text at {pos}: {text[pos:pos + 60]!r}")
        name, type_name = _name(match.group(1)), match.group(2)
        pos = match.end()
        if text.startswith("'", pos):  # a literal: up to the quote not doubled
            end = pos + 1
            parts = []
            while True:
                close = text.index("'", end)
                parts.append(text[end:close])
                if text.startswith("'", close + 1):
                    parts.append("'")
                    end = close + 2
                    continue
                pos = close + 1
                break
            columns[name] = "".join(parts)
            continue
        end = text.find(" ", pos)
        end = length if end < 0 else end
        raw = text[pos:end]
        pos = end
        if raw == "null":
            columns[name] = None
        elif raw == "unchanged-toast-datum":
            columns[name] = TOAST_UNCHANGED
        elif type_name in _INTEGER_TYPES:
            columns[name] = int(raw)
        else:
            columns[name] = raw
    return columns


def parse_change(data: str) -> Change:
    """One `table ...: KIND: ...` row."""
    header = _HEADER.match(data)
    if header is None:
        raise ValueError(f"unexpected test_decoding row: {data[:80]!r}")
    tables, kind = header.group(1), header.group(2)
    rest = data[header.end():]
    if kind == TRUNCATE:
        names = tuple(_table_name(t) for t in tables.split(", "))
        return Change(names[0], kind, tables=names)
    table = _table_name(tables)
    if rest.endswith("(no-tuple-data)") and rest.strip() == "(no-tuple-data)":
        return Change(table, kind)
    if kind == INSERT:
        return Change(table, kind, new=parse_tuple(rest))
    if kind == DELETE:
        return Change(table, kind, old=parse_tuple(rest))
    # UPDATE: " old-key: <tuple> new-tuple: <tuple>" when the old row is logged, else the new one.
    if rest.startswith(" old-key:"):
        old_text, marker, new_text = rest[len(" old-key:"):].partition(" new-tuple:")
        if not marker:
            raise ValueError(f"an UPDATE without its new tuple: {data[:80]!r}")
        new = {} if new_text.strip() == "(no-tuple-data)" else parse_tuple(new_text)
        old = parse_tuple(old_text)
        # Unchanged out-of-line values are printed in the old row only.
        if TOAST_UNCHANGED in new.values():
            for name, value in new.items():
                if value is TOAST_UNCHANGED and name in old:
                    new[name] = old[name]
        return Change(table, kind, old=old, new=new)
    return Change(table, kind, new=parse_tuple(rest))


def parse_rows(rows) -> tuple[list[Transaction], int | None]:
    """Group the slot's (lsn, xid, data) rows into committed transactions.

    Returns:
        (the transactions complete in `rows`, in commit order; the end_lsn of the last one, or
        None when there is none). A transaction cut off at the end (no COMMIT row) is left out.
    """
    done: list[Transaction] = []
    current: Transaction | None = None
    for lsn, xid, data in rows:
        if data.startswith("BEGIN"):
            current = Transaction(xid=int(xid) if xid is not None else None)
        elif data.startswith("COMMIT"):
            if current is None:
                continue
            match = _COMMIT.match(data)
            current.end_lsn = parse_lsn(lsn) if isinstance(lsn, str) else int(lsn)
            if match and match.group(2):
                current.committed_at = _commit_time(match.group(2))
            done.append(current)
            current = None
        elif data.startswith("table ") and current is not None:
            current.changes.append(parse_change(data))
        # Other rows (logical messages) carry no row changes.
    return done, (done[-1].end_lsn if done else None)


def _commit_time(text: str) -> datetime | None:
    """`2026-12-01 20:39:56.953451+00` as a naive UTC datetime (the session runs in UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = (moment - moment.utcoffset()).replace(tzinfo=None)
    return moment
