"""test_decoding's text, as PostgreSQL 15 prints it, parsed into transactions of row changes."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_store.streaming.decoding import (
    DELETE,
    INSERT,
    TRUNCATE,
    UPDATE,
    _parse_tuple,
    format_lsn,
    parse_change,
    parse_lsn,
    parse_rows,
    parse_tuple,
)

ROWS = [
    ("0/1538C10", "727", "BEGIN 727"),
    ("0/1538C10", "727", "table public.users: INSERT: id[bigint]:9 email[character varying]:'it''s a '' quote' "
                         "created_at[timestamp without time zone]:'2024-01-01 00:00:00.5'"),
    ("0/1538D80", "727", "table public.policies: UPDATE: old-key: id[bigint]:301 user_id[bigint]:3 "
                         "status[character varying]:'active' new-tuple: id[bigint]:301 user_id[bigint]:4 "
                         "status[character varying]:'active'"),
    ("0/1538DF8", "727", "table public.quotes: DELETE: id[bigint]:43 user_id[bigint]:4"),
    ("0/1539490", "727", 'table public.users, "Other"."T""x": TRUNCATE: (no-flags)'),
    ("0/1539590", "727", "COMMIT 727 (at 2026-12-01 20:39:56.953451+00)"),
    ("0/15395D0", "728", "BEGIN 728"),
    ("0/15395D0", "728", "table public.users: INSERT: id[bigint]:10"),  # no COMMIT: cut off
]


def test_transactions_with_their_changes_and_commit_position():
    transactions, last = parse_rows(ROWS)
    assert len(transactions) == 1 and last == parse_lsn("0/1539590")
    (transaction,) = transactions
    assert transaction.xid == 727 and transaction.committed_at == datetime(2026, 12, 1, 20, 39, 56, 953451)
    insert, update, delete, truncate = transaction.changes
    assert (insert.kind, insert.table, insert.old) == (INSERT, "users", None)
    assert insert.new == {"id": 9, "email": "it's a ' quote", "created_at": "2024-01-01 00:00:00.5"}
    assert (update.kind, update.old["user_id"], update.new["user_id"]) == (UPDATE, 3, 4)
    assert (delete.kind, delete.table, delete.old, delete.new) == (DELETE, "quotes", {"id": 43, "user_id": 4}, None)
    assert (truncate.kind, truncate.tables) == (TRUNCATE, ("users", 'T"x'))


def test_nulls_toast_and_quoted_names():
    change = parse_change('table public.quotes: UPDATE: old-key: id[bigint]:41 note[text]:\'long\' '
                          'new-tuple: id[bigint]:41 bound_at[timestamp without time zone]:null '
                          'note[text]:unchanged-toast-datum "Odd Name"[integer]:-5')
    assert change.new == {"id": 41, "bound_at": None, "note": "long", "Odd Name": -5}
    assert parse_change("table public.users: INSERT: (no-tuple-data)").new is None
    # Without REPLICA IDENTITY FULL an update of a non-key column logs the new row only.
    assert parse_change("table public.users: UPDATE: id[bigint]:1").old is None


def test_lsn_round_trip():
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("0/0") == 0


def test_unknown_text_is_an_error_not_a_silent_skip():
    with pytest.raises(ValueError):
        parse_change("table public.users: INSERT: id[bigint]")


_NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
_TYPED = st.one_of(
    st.tuples(st.just("bigint"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("integer"), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.sampled_from(["character varying", "text", "timestamp without time zone", "text[]"]),
              st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)),
    st.tuples(st.sampled_from(["bigint", "text"]), st.none()),
)


def _printed(name: str, type_name: str, value) -> str:
    """A column as test_decoding prints it."""
    if value is None:
        return f" {name}[{type_name}]:null"
    if isinstance(value, int):
        return f" {name}[{type_name}]:{value}"
    return f" {name}[{type_name}]:'{value.replace(chr(39), chr(39) * 2)}'"


@given(st.lists(st.tuples(_NAMES, _TYPED), max_size=8, unique_by=lambda column: column[0]))
def test_the_one_expression_parse_equals_the_general_one(columns):
    text = "".join(_printed(name, type_name, value) for name, (type_name, value) in columns)
    expected = {name: value for name, (_, value) in columns}
    assert parse_tuple(text) == _parse_tuple(text) == expected


def test_a_decoded_transaction_id_is_placed_in_the_snapshots_epoch():
    from feature_store.streaming.slot import _as_full

    assert _as_full(1001, 1000) == 1001  # committed, not yet completed in the snapshot's eyes
    assert _as_full(5, (1 << 32) + 10) == (1 << 32) + 5
    assert _as_full(0xFFFFFFF0, (1 << 32) + 10) == 0xFFFFFFF0  # just before the epoch turned
    assert _as_full(10, 0xFFFFFFF0) == (1 << 32) + 10


_FRAGMENTS = st.one_of(
    st.sampled_from([' "Odd Name"[integer]:-5', ' "a""b"[text]:\'x\'', " note[text]:unchanged-toast-datum",
                     " tags[text[]]:'{a,b}'", " x[bigint]:", " [text]:'a'", " y[text]: z", "'", " ", "z"]),
    st.text(alphabet=" []:'\"ab1", max_size=6),
)


@given(st.lists(st.one_of(st.tuples(_NAMES, _TYPED), _FRAGMENTS), max_size=8))
def test_any_text_parses_as_the_general_parser_does(parts):
    # Columns in the common shape mixed with anything else: the one expression either covers the
    # whole text or hands it to the general parser, which answers (or refuses) for both.
    text = "".join(_printed(part[0], *part[1]) if isinstance(part, tuple) else part for part in parts)
    try:
        expected = _parse_tuple(text)
    except (ValueError, IndexError) as exc:
        with pytest.raises(type(exc)):
            parse_tuple(text)
        return
    assert parse_tuple(text) == expected
