"""Training-set spines as request bodies, produced a chunk at a time so memory does not grow with
the spine: a pandas DataFrame as CSV, an iterable of dicts as NDJSON (its values keep their JSON
types: the server types passed-through Parquet columns from them)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any


def as_dataframe(spine: Any):
    """`spine` when it is a pandas DataFrame, else None (pandas is not imported for that)."""
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(spine, pandas.DataFrame):
        return spine
    return None


class Sent:
    """How much of a spine was handed to the connection: `started` once its first bytes were."""

    def __init__(self) -> None:
        self.rows = 0
        self.started = False


def _integral_ids(frame):
    """The frame with float id columns whose values are all whole numbers as nullable integers:
    to_csv would write 24.0, which names no entity (ids are matched as written)."""
    columns = [c for c in frame.columns if isinstance(c, str) and (c == "entity_id" or c.endswith("_id"))
               and frame[c].dtype.kind == "f"]
    fixed = {}
    for column in columns:
        values = frame[column].dropna()
        if (values == values.round()).all():
            fixed[column] = frame[column].astype("Int64")
    return frame.assign(**fixed) if fixed else frame


def dataframe_csv(frame, chunk_rows: int, sent: Sent) -> Iterator[bytes]:
    """The frame as CSV (header first, no index), `chunk_rows` rows per piece."""
    frame = _integral_ids(frame)
    sent.started = True
    yield frame.iloc[:0].to_csv(index=False).encode()
    for start in range(0, len(frame), chunk_rows):
        piece = frame.iloc[start:start + chunk_rows]
        yield piece.to_csv(index=False, header=False).encode()
        sent.rows += len(piece)


def _plain(value: Any) -> Any:
    """A spine value as JSON can carry it: times as ISO 8601, numpy scalars as Python numbers,
    NaN / NaT / NA as null."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    try:
        if value != value:  # NaN, NaT, pandas NA
            return None
    except (TypeError, ValueError):  # pandas NA refuses bool(); arrays
        return None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _plain(item())
    return value


def records_ndjson(rows: Iterable[Mapping], chunk_rows: int, sent: Sent) -> Iterator[bytes]:
    """The rows as NDJSON, `chunk_rows` lines per piece."""
    lines: list[str] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"spine row {i}: expected a dict (entity_id or the entity type, as_of, other columns), "
                            f"got {type(row).__name__}")
        lines.append(json.dumps({str(k): _plain(v) for k, v in row.items()}, separators=(",", ":"),
                                allow_nan=False, default=str))
        if len(lines) >= chunk_rows:
            sent.started = True
            yield ("\n".join(lines) + "\n").encode()
            sent.rows += len(lines)
            lines = []
    if lines:
        sent.started = True
        yield ("\n".join(lines) + "\n").encode()
        sent.rows += len(lines)
