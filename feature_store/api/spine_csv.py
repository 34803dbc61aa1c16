"""A CSV spine's fast path: parsed and validated a block at a time by pyarrow's CSV reader and
compute functions instead of a Python loop per row (a 100,000-row spine in about a tenth of the
time: BENCHMARKS.md, section 9).

It takes only what it can read exactly as the plain path (api/training_sets.py,
`_spine_from_csv`, and `Spine.add`) does: no quotes, carriage returns or NUL bytes in the body,
every instant of the form `YYYY-MM-DD[T ]HH:MM:SS[.f to .ffffff][Z or ±HH:MM]`, every entity id
non-empty, every row as wide as the header. Anything else (and every error) makes it give up, and
the plain path reads the spooled body again, with its exact errors and line numbers. A property
test holds the two paths equal (tests/unit/test_spine_csv.py).
"""

from __future__ import annotations

import csv
from typing import BinaryIO

_INSTANT = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"
_ZONED = r"(Z|[+-]\d{2}:\d{2})$"
_CANONICAL_INT = r"^(?:0|-?[1-9][0-9]{0,18})$"  # registry.Entity.parse_id's (then the 64-bit range)
_UNSAFE = (b'"', b"\r", b"\x00")  # what the plain path's csv module reads in ways not checked here
_BLOCK = 1 << 20


class GiveUp(Exception):
    """The fast path cannot read this spine exactly as the plain path does."""


def unsafe(block: bytes) -> bool:
    """Whether a block of the body holds a byte the fast path leaves to the plain path."""
    return any(byte in block for byte in _UNSAFE)


def read(body: BinaryIO, make_spine):
    """The spine in `body` (a seekable file at its start), or GiveUp.

    Args:
        make_spine: `make_spine(header_names, where) -> Spine` (the plain path's `_start`).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pa_csv

    first = body.readline()
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise GiveUp from None
    header = next(csv.reader([text]), None)
    if not header:
        raise GiveUp
    header = [name.strip() for name in header]
    if header[0].startswith("\ufeff"):
        header[0] = header[0][1:].strip()
    spine = make_spine(header, "the CSV header")  # its errors are the plain path's too
    try:
        names = [f"c{i}" for i in range(len(header))]
        reader = pa_csv.open_csv(
            body, read_options=pa_csv.ReadOptions(column_names=names, block_size=_BLOCK),
            parse_options=pa_csv.ParseOptions(newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                  strings_can_be_null=False, quoted_strings_can_be_null=False))
        id_at, as_of_at = header.index(spine.id_column), header.index("as_of")
        extra_at = [header.index(name) for name in spine.extra_columns]
        for batch in reader:
            if not batch.num_rows:
                continue
            ids, as_of = batch.column(id_at), batch.column(as_of_at)
            if pc.any(pc.equal(pc.utf8_length(ids), 0)).as_py() or not pc.all(
                    pc.match_substring_regex(as_of, _INSTANT)).as_py():
                raise GiveUp
            canonical = pc.match_substring_regex(ids, _CANONICAL_INT)
            numbers = pc.if_else(canonical, ids, pa.scalar(None, pa.string())).cast(pa.int64())  # 64-bit or raises
            zoned = pc.match_substring_regex(as_of, _ZONED)
            naive_null = pa.scalar(None, pa.string())
            moments = pc.coalesce(
                pc.if_else(zoned, naive_null, as_of).cast(pa.timestamp("us")),
                pc.if_else(zoned, as_of, naive_null).cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us")))
            # An offset can move an instant out of the years Python's datetime holds (the plain
            # path's 400): leave that to it.
            low, high = pc.min_max(moments).values()
            if low.value < _MIN_US or high.value > _MAX_US:
                raise GiveUp
            extras = [batch.column(i).to_pylist() for i in extra_at]
            if not spine.add_columns(ids.to_pylist(), numbers.fill_null(0).to_numpy(), numbers.is_valid().to_numpy(
                    zero_copy_only=False), moments.cast(pa.int64()).to_numpy(),
                                     list(zip(*extras, strict=True)) if extras else [()] * batch.num_rows):
                raise GiveUp
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError, ValueError):
        spine.close()
        raise GiveUp from None
    except GiveUp:
        spine.close()
        raise
    except BaseException:
        spine.close()
        raise
    return spine


# datetime.min and datetime.max in microseconds from 1970.
_MIN_US = -62135596800000000
_MAX_US = 253402300799999999
