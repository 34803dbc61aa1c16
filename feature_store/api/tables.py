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
    return orjson.loads(b"[" + b",".join([b"null" if v is None else v for v in encoded]) + b"]")


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
    yield buffer.getvalue().encode()
    for chunk in _chain(first, rest):
        if chunk:
            yield csv_rows(_csv_columns(spine, chunk)).encode()


def _csv_columns(spine, chunk) -> list[list[str]]:
    """A chunk's columns as CSV field texts."""
    columns = [chunk.entity_ids, chunk.as_of()]
    for i, name in enumerate(spine.extra_columns):
        column = [extra[i] for extra in chunk.extra]
        columns.append(column if spine.extra_types[name] <= {str} else list(map(_text, column)))
    columns.append(["true" if existed else "false" for existed in chunk.existed])
    columns.extend(list(map(_value_text, _decoded(encoded))) for encoded in chunk.values)
    return columns


def _value_text(value) -> str:
    """_text(), with the common kinds first (a training set's values by the hundred thousand)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)  # orjson writes an integer as str() does
    return _text(value)


_CSV_SPECIAL = ',"\r\n'


def csv_rows(columns: list[list[str]]) -> str:
    """Rows of these columns' texts as CSV, each line ended by a newline: exactly what
    csv.writer (QUOTE_MINIMAL, lineterminator "\\n") writes. Joined directly when no field needs
    quoting (a column's fields joined hold exactly one comma fewer than the fields, and no quote
    or line break: the common case, 5-10 times faster), else written by csv.writer."""
    if all(_plain(column) for column in columns):
        return "".join(",".join(row) + "\n" for row in zip(*columns, strict=True))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(zip(*columns, strict=True))
    return buffer.getvalue()


def _plain(column: list[str]) -> bool:
    joined = ",".join(column)
    if joined.count(",") != len(column) - 1 or '"' in joined or "\n" in joined or "\r" in joined:
        return False
    # csv.writer quotes a single empty field of a one-column row; columns here are never alone.
    return True


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
    # Plain encoding: dictionaries cost 3x the time of a chunk's write and saved nothing here.
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, use_dictionary=False)
    try:
        for chunk in _chain(first, rest):
            if not chunk:
                continue
            arrays = [pa.array(chunk.entity_ids, pa.string()),
                      pa.array(chunk.as_of_us, pa.int64()).cast(pa.timestamp("us"))]
            for i, (name, arrow_type) in enumerate(zip(spine.extra_columns, extra_types, strict=True)):
                column = [extra[i] for extra in chunk.extra]
                if not spine.extra_types[name] <= {str}:  # all text (a CSV spine's) is written as it is
                    column = [_extra_value(value, arrow_type, pa) for value in column]
                arrays.append(pa.array(column, type=arrow_type))
            arrays.append(pa.array(chunk.existed, pa.bool_()))
            for decode, encoded, arrow_type in zip(decoders, chunk.values, schema.types[-len(features):],
                                                   strict=True):
                arrays.append(decode(pa, encoded, arrow_type))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


def _instants(pa, texts: list):
    """ISO 8601 texts without offset (datetime.isoformat()'s: what features' datetime values are
    encoded as) as a timestamp array: parsed by Arrow, or by datetime where Arrow cannot."""
    array = pa.array(texts, pa.string())
    try:
        return array.cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parse = datetime.fromisoformat
        return pa.array([None if t is None else parse(t) for t in texts], pa.timestamp("us"))


def _decoder(data_type: DataType) -> Callable:
    if data_type is DataType.DATETIME:
        return lambda pa, encoded, arrow_type: _instants(pa, _decoded(encoded))
    return lambda pa, encoded, arrow_type: pa.array(_decoded(encoded), type=arrow_type)


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
