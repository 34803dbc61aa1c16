"""The CSV fast paths of training sets, held equal to the plain paths: a spine read by pyarrow
(api/spine_csv.py) against the csv module's row-by-row reading, and a table's rows joined
directly against csv.writer (api/tables.py, csv_rows)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.api import spine_csv
from feature_store.api import training_sets as api
from feature_store.api.tables import csv_rows
from feature_store.errors import BadRequest, TooLarge
from feature_store.features import REGISTRY
from feature_store.services import training_sets

FEATURES, ENTITY = training_sets.resolve_features(REGISTRY, None, "underwriting_v1")


def instant_text(moment: datetime, form: int) -> str:
    """An instant as clients write it (most forms the fast path takes, some it leaves)."""
    forms = [
        lambda m: m.isoformat(),
        lambda m: m.isoformat(sep=" "),
        lambda m: m.isoformat() + "Z",
        lambda m: m.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        lambda m: m.replace(tzinfo=UTC).astimezone(timezone(-timedelta(hours=8))).isoformat(),
        lambda m: m.isoformat(timespec="milliseconds"),
        lambda m: m.isoformat()[:-3] if m.microsecond else m.isoformat() + ".5",  # 3 or 1 fraction digits
        lambda m: m.date().isoformat(),  # a date alone: the plain path's
        lambda m: " " + m.isoformat(),  # spaces: the plain path strips them
        lambda m: m.isoformat().replace("-", "/"),  # not an instant
        lambda m: m.replace(tzinfo=timezone(timedelta(hours=14))).isoformat(),  # may leave the years
    ]
    return forms[form % len(forms)](moment)


moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))
ids = st.one_of(st.integers(-(2**63), 2**63 - 1).map(str), st.integers(-(2**70), 2**70).map(str),
                st.sampled_from(["007", "7.0", "", "abc", "-0", "0", "ü"]), st.text(max_size=4))
rows = st.lists(st.tuples(ids, moments, st.integers(0, 60), st.text(max_size=6)), max_size=40)


def read(reader, body: bytes, max_rows: int = 10**6, chunk_rows: int = 7):
    args = (FEATURES, ENTITY, max_rows, chunk_rows)
    try:
        spine = reader(body, args)
    except (BadRequest, TooLarge) as exc:
        return type(exc).__name__, str(exc)
    try:
        chunks = [(c.entity_ids, c.numbers.tolist(), c.known.tolist(), c.as_of_us.tolist(), c.extra)
                  for c in spine.chunks()]
        return chunks, spine.rows, spine.extra_types, spine.extra_columns
    finally:
        spine.close()


def plain(body: bytes, args):
    return api._spine_from_csv(io.BufferedReader(io.BytesIO(body)), args)


def either(body: bytes, args):
    return api._csv_spine(io.BufferedReader(io.BytesIO(body)), args)


def fast(body: bytes, args):
    return spine_csv.read(io.BytesIO(body), lambda header, where: api._start(header, args, where))


def body_of(header: str, table, bom: bool, crlf: bool) -> bytes:
    lines = [header] + [f"{i},{instant_text(m, form)},{label}" for i, m, form, label in table]
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


@settings(max_examples=300, deadline=None)
@given(table=rows, bom=st.booleans(), crlf=st.booleans(), max_rows=st.sampled_from([3, 10**6]),
       header=st.sampled_from(["user_id,as_of,label", "entity_id,as_of,label", "as_of,label", "user_id,as_of,as_of"]))
def test_a_csv_spine_reads_the_same_by_either_path(table, bom, crlf, max_rows, header):
    body = body_of(header, table, bom, crlf)
    assert read(either, body, max_rows) == read(plain, body, max_rows)


@settings(max_examples=100, deadline=None)
@given(table=st.lists(st.tuples(st.integers(1, 10**9).map(str), moments, st.integers(0, 6),
                                st.text(alphabet="abc xyz-_.", max_size=6)), min_size=1, max_size=40))
def test_common_spines_take_the_fast_path(table):
    """ids, instants in the forms clients write (naive, Z, offsets, a space, fractions) and
    plain labels: read by the fast path, not handed to the plain one."""
    body = body_of("user_id,as_of,label", table, bom=False, crlf=False)
    assert not spine_csv.unsafe(body)
    assert read(fast, body) == read(plain, body)


@pytest.mark.parametrize("body", [
    b'user_id,as_of\n1,"2024-01-01T00:00:00"\n',  # quotes
    b"user_id,as_of\n1,2024-01-01T00:00:00\n2\n",  # a short row
    b"user_id,as_of\n,2024-01-01T00:00:00\n",  # an empty id
    b"user_id,as_of\n1,2024-02-30T00:00:00\n",  # no such day
    b"user_id,as_of\n1,0001-01-01T00:00:00+01:00\n",  # before the first year in UTC
    b"user_id,as_of\n1,2024-01-01T00:00:00\xff\n",  # not UTF-8
])
def test_what_the_fast_path_leaves_is_the_plain_paths_answer(body):
    assert read(either, body) == read(plain, body)
    if spine_csv.unsafe(body):
        return
    with pytest.raises(spine_csv.GiveUp):
        read(fast, body)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(moments, max_size=30))
def test_instants_are_written_as_isoformat_writes_them(values):
    micros = [(m - datetime(1970, 1, 1)) // timedelta(microseconds=1) for m in values]
    assert training_sets.iso_texts(micros) == [m.isoformat() for m in values]


fields = st.text(alphabet=st.sampled_from(list("ab ,\"\r\n;'\\é0") + ["\x00"]), max_size=5)


@settings(max_examples=300, deadline=None)
@given(columns=st.integers(2, 6).flatmap(lambda width: st.lists(
    st.lists(fields, min_size=width, max_size=width), max_size=20)))
def test_csv_rows_write_what_csv_writer_writes(columns):
    by_rows = columns
    by_columns = [list(column) for column in zip(*by_rows, strict=True)] if by_rows else []
    if not by_columns:
        return
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(by_rows)
    assert csv_rows(by_columns) == buffer.getvalue()
