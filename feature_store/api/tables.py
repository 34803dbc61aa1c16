"""Training-set tables as JSON, NDJSON, CSV and Parquet, written a chunk of rows at a time.

Every format has the same columns: entity_id, as_of, the spine's other columns (passed through),
entity_existed (false when the entity's row did not exist at the instant: its values are null),
then one column per feature.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import orjson

from feature_store.registry import DataType

Rows = Iterable  # of services.training_sets.TrainingChunk


def _columns(spine, features) -> list[str]:
    return ["entity_id", "as_of", *spine.extra_columns, "entity_existed", *(f.feature_type for f in features)]


def _row_object(columns: list[str], row) -> dict:
    entity_id, as_of, extra, existed, values = row
    values = [entity_id, as_of, *extra, existed, *(orjson.Fragment(v) if v is not None else None for v in values)]
    return dict(zip(columns, values, strict=True))


def _decoded(encoded: list) -> list:
    """A column's JSON encodings decoded in one call (None stays None): a 50,000-value column
    in about a millisecond, against one orjson.loads() per value."""
    return orjson.loads(b"[" + b",".join(b"null" if v is None else v for v in encoded) + b"]")


def write_json(spine, features, first, rest) -> Iterator[bytes]:
    columns = _columns(spine, features)
    head = {"feature_types": [f.feature_type for f in features], "columns": columns, "total_rows": spine.rows}
    yield orjson.dumps(head)[:-1] + b', "rows": ['
    separator = b""
    for chunk in _chain(first, rest):
        if chunk:
            yield separator + b",".join(orjson.dumps(_row_object(columns, row)) for row in chunk.rows())
            separator = b","
    yield b"]}"


def write_ndjson(spine, features, first, rest) -> Iterator[bytes]:
    columns = _columns(spine, features)
    for chunk in _chain(first, rest):
        if chunk:
            yield b"".join(orjson.dumps(_row_object(columns, row)) + b"\n" for row in chunk.rows())


def _text(value) -> str:
    """A value as CSV text: strings as they are, everything else as its JSON (as Parquet holds a
    mixed column)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def write_csv(spine, features, first, rest) -> Iterator[bytes]:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(_columns(spine, features))
    for chunk in _chain(first, rest):
        if not chunk:
            continue
        texts = [list(map(_text, _decoded(encoded))) for encoded in chunk.values]
        values = zip(*texts, strict=True)
        out.writerows([entity_id, as_of, *map(_text, extra), "true" if existed else "false", *row_values]
                      for entity_id, as_of, extra, existed, row_values
                      in zip(chunk.entity_ids, chunk.as_of, chunk.extra, chunk.existed, values, strict=True))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()


class _Sink:
    """A write-only file that hands over what was written, so a Parquet file streams as it grows."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def write_parquet(spine, features, first, rest) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {DataType.DATETIME: pa.timestamp("us"), DataType.INTEGER: pa.int64(), DataType.STRING: pa.string(),
             DataType.FLOAT: pa.float64(), DataType.BOOLEAN: pa.bool_()}
    extra_types = [_arrow_type(pa, spine.extra_types[name]) for name in spine.extra_columns]
    schema = pa.schema([("entity_id", pa.string()), ("as_of", pa.timestamp("us")),
                        *zip(spine.extra_columns, extra_types, strict=True), ("entity_existed", pa.bool_()),
                        *((f.feature_type, types[f.data_type]) for f in features)])
    decoders = [_decoder(f.data_type) for f in features]
    sink = _Sink()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema)
    try:
        for chunk in _chain(first, rest):
            if not chunk:
                continue
            arrays = [chunk.entity_ids, list(map(datetime.fromisoformat, chunk.as_of))]
            for i, arrow_type in enumerate(extra_types):
                arrays.append([_extra_value(extra[i], arrow_type, pa) for extra in chunk.extra])
            arrays.append(chunk.existed)
            for decode, encoded in zip(decoders, chunk.values, strict=True):
                arrays.append(decode(encoded))
            writer.write_table(pa.Table.from_arrays([pa.array(a, type=t) for a, t in
                                                     zip(arrays, schema.types, strict=True)], schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


def _decoder(data_type: DataType) -> Callable:
    if data_type is DataType.DATETIME:
        parse = datetime.fromisoformat
        return lambda encoded: [None if v is None else parse(v) for v in _decoded(encoded)]
    return _decoded


def _arrow_type(pa, seen: set):
    kinds = seen - {type(None)}
    if kinds <= {bool} and kinds:
        return pa.bool_()
    if kinds <= {int} and kinds:
        return pa.int64()
    if kinds <= {int, float} and kinds:
        return pa.float64()
    return pa.string()


def _extra_value(value, arrow_type, pa):
    if value is None or arrow_type != pa.string() or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _chain(first, rest):
    yield first
    yield from rest


WRITERS: dict[str, tuple[str, Callable]] = {
    "json": ("application/json", write_json),
    "ndjson": ("application/x-ndjson", write_ndjson),
    "csv": ("text/csv", write_csv),
    "parquet": ("application/vnd.apache.parquet", write_parquet),
}
_ACCEPT = {"text/csv": "csv", "application/x-ndjson": "ndjson", "application/vnd.apache.parquet": "parquet",
           "application/x-parquet": "parquet", "application/json": "json"}


def writer_for(format_name: str | None, accept: str) -> str | None:
    """The output format: ?format= when given (None if unknown), else the Accept header's, else JSON."""
    if format_name is not None:
        name = format_name.strip().lower()
        return name if name in WRITERS else None
    for part in accept.split(","):
        name = _ACCEPT.get(part.split(";")[0].strip().lower())
        if name is not None:
            return name
    return "json"
