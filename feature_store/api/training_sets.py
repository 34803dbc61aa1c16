"""POST /training-sets: a spine in (JSON, CSV or NDJSON), a table out (JSON, NDJSON, CSV or
Parquet), both streamed: the spine is spooled to disk while it is validated, the table is
written a chunk at a time (services/training_sets.py)."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator

import orjson
from flask import Response, current_app, request, stream_with_context

from feature_store.api import bp, spine_csv
from feature_store.api.bodies import body_deadline, parse_json
from feature_store.api.errors import ApiError
from feature_store.api.tables import WRITERS, writer_for
from feature_store.errors import BadRequest, TooLarge
from feature_store.services import training_sets
from feature_store.services.training_sets import Spine

_CSV = {"text/csv", "application/csv"}
_NDJSON = {"application/x-ndjson", "application/jsonl", "application/ndjson"}
_READ = 1 << 20


class _Body(io.RawIOBase):
    """The request body as a raw stream, read within REQUEST_BODY_TIMEOUT per read and refused
    past `limit` bytes (also when it is chunked and has no Content-Length)."""

    def __init__(self, stream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(min(len(buffer), _READ))
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise TooLarge(f"the spine is larger than {self.limit} bytes")
        buffer[:len(data)] = data
        return len(data)


def _features_from_query():
    feature_set = request.args.get("feature_set")
    listed = request.args.get("feature_types")
    return ([name.strip() for name in listed.split(",") if name.strip()] if listed is not None else None), feature_set


def _entity_column(names: list[str], entity_type: str, where: str) -> str:
    if "entity_id" in names and entity_type in names:
        raise BadRequest(f"{where}: both entity_id and {entity_type} columns; name the ids once")
    for name in ("entity_id", entity_type):
        if name in names:
            return name
    raise BadRequest(f"{where}: the spine needs an entity_id (or {entity_type}) column")


def _csv_spine(body: io.BufferedReader, spine_args) -> Spine:
    """A CSV spine: the body spooled to a temporary file first, then read by the fast path
    (api/spine_csv.py) when it can read it exactly, else (or when it gives up) by the plain one."""
    with tempfile.TemporaryFile(prefix="feature-store-spine-body-") as spooled:
        safe = True
        while block := body.read(_READ):
            safe = safe and not spine_csv.unsafe(block)
            spooled.write(block)
        if safe:
            spooled.seek(0)
            try:
                return spine_csv.read(spooled, lambda header, where: _start(header, spine_args, where))
            except spine_csv.GiveUp:
                pass
        spooled.seek(0)
        return _spine_from_csv(spooled, spine_args)


def _spine_from_csv(body: io.BufferedIOBase, spine_args) -> Spine:
    """A CSV spine read row by row (the plain path: every form the csv module reads)."""
    text = io.TextIOWrapper(body, encoding="utf-8", errors="strict", newline="")
    reader = csv.reader(text)
    spine = None
    try:
        header = next(reader, None)
        if header is None:
            raise BadRequest("the spine is empty (expected a CSV header: entity_id,as_of[,other columns])")
        header = [name.strip() for name in header]
        if header and header[0].startswith("\ufeff"):  # a byte-order mark (Excel's CSV)
            header[0] = header[0][1:].strip()
        spine = _start(header, spine_args, "the CSV header")
        id_at, as_of_at = header.index(spine.id_column), header.index("as_of")
        extra_at = [header.index(name) for name in spine.extra_columns]
        add, width = spine.add, len(header)
        for line, row in enumerate(reader, start=2):
            if len(row) != width:
                if not row:
                    continue
                raise BadRequest(f"spine line {line}: {len(row)} fields, the header has {len(header)}")
            add(row[id_at], row[as_of_at], [row[i] for i in extra_at], line)
    except BaseException as exc:
        if spine is not None:
            spine.close()
        if isinstance(exc, UnicodeDecodeError):
            raise BadRequest("the spine is not UTF-8 text") from None
        if isinstance(exc, csv.Error):
            raise BadRequest(f"the spine is not valid CSV ({exc})") from None
        raise
    finally:
        text.detach()  # the caller's file stays the caller's to close
    return spine


def _objects_spine(rows: Iterator[tuple[str, object]], spine_args) -> Spine:
    spine = None
    try:
        for where, row in rows:
            if not isinstance(row, dict):
                raise BadRequest(f"{where}: must be an object with entity_id and as_of")
            if spine is None:
                spine = _start(list(row), spine_args, where)
            unexpected = set(row) - spine.known_columns
            if unexpected:
                raise BadRequest(f"{where}: column {sorted(unexpected)[0]!r} is not in the spine's first row")
            spine.add(row.get(spine.id_column), row.get("as_of"), [row.get(name) for name in spine.extra_columns],
                      where)
    except BaseException:
        if spine is not None:
            spine.close()
        raise
    if spine is None:
        raise BadRequest("the spine is empty (expected at least one row of entity_id and as_of)")
    return spine


_MAX_LINE = 1 << 20


def _ndjson_rows(body: io.BufferedReader) -> Iterator[tuple[str, object]]:
    line = 0
    while raw := body.readline(_MAX_LINE + 1):
        line += 1
        if len(raw) > _MAX_LINE:
            raise BadRequest(f"spine line {line}: longer than {_MAX_LINE} bytes")
        if not raw.strip():
            continue
        try:
            yield f"spine line {line}", orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # integers beyond 64 bits, exactly
                yield f"spine line {line}", parse_json(raw)
            except (ValueError, RecursionError):
                raise BadRequest(f"spine line {line}: not valid JSON") from None


def _start(columns: list[str], spine_args, where: str) -> Spine:
    features, entity, max_rows, chunk_rows = spine_args
    if len(set(columns)) != len(columns):
        raise BadRequest(f"{where}: a column is named twice")
    id_column = _entity_column(columns, entity.entity_type, where)
    if "as_of" not in columns:
        raise BadRequest(f"{where}: the spine needs an as_of column")
    clashing = [c for c in columns if c in {f.feature_type for f in features} | {"entity_existed"}]
    if clashing:
        raise BadRequest(f"{where}: column {clashing[0]!r} would clash with an output column")
    extra = [c for c in columns if c not in (id_column, "as_of")]
    spine = Spine(entity, extra, max_rows, chunk_rows)
    spine.id_column = id_column
    spine.known_columns = set(columns)
    return spine


def _read_spine(config) -> tuple[Spine, list]:
    mimetype = request.mimetype
    if mimetype in _CSV or mimetype in _NDJSON:
        features, entity = training_sets.resolve_features(_services().registry, *_features_from_query())
        limit = config.TRAINING_SET_MAX_BYTES
        request.max_content_length = limit  # this endpoint's own limit, above the JSON one
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(f"the spine is larger than {limit} bytes")
        args = (features, entity, config.TRAINING_SET_MAX_ROWS, config.TRAINING_SET_CHUNK_ROWS)
        raw = request.environ["wsgi.input"] if request.content_length is None else request.stream
        body = io.BufferedReader(_Body(raw, limit), buffer_size=_READ)
        with body_deadline(request.environ, config.REQUEST_BODY_TIMEOUT):
            try:
                spine = _csv_spine(body, args) if mimetype in _CSV else _objects_spine(_ndjson_rows(body), args)
            except TimeoutError:
                raise ApiError(408, "the request body did not arrive in time") from None
        return spine, features
    from feature_store.api import _json_body

    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"a JSON spine is at most {limit} bytes (MAX_CONTENT_LENGTH); send a larger one as CSV "
                       "(text/csv) or NDJSON (application/x-ndjson), streamed up to TRAINING_SET_MAX_BYTES")
    payload = _json_body()
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object with spine and feature_types (or feature_set)")
    feature_types = payload.get("feature_types")
    if feature_types is not None and not isinstance(feature_types, list):
        raise BadRequest("feature_types: must be a list")
    feature_set = payload.get("feature_set")
    if feature_set is not None and not isinstance(feature_set, str):
        raise BadRequest("feature_set: must be a string")
    features, entity = training_sets.resolve_features(_services().registry, feature_types, feature_set)
    rows = payload.get("spine")
    if not isinstance(rows, list):
        raise BadRequest("spine: must be a list of rows (objects with entity_id and as_of)")
    args = (features, entity, config.TRAINING_SET_MAX_ROWS, config.TRAINING_SET_CHUNK_ROWS)
    return _objects_spine(((f"spine[{i}]", row) for i, row in enumerate(rows)), args), features


def busy(limit: int) -> ApiError:
    """The answer when this process already builds its limit of training sets or parity checks."""
    return ApiError(503, f"this web process is already building {limit} training set(s) or parity check(s) "
                         "(TRAINING_SET_CONCURRENCY); retry shortly")


def _services():
    return current_app.extensions["feature_store"]


@bp.post("/training-sets")
def training_set():
    """Build a training set: one row per spine row, one column per feature, values as of each row's instant."""
    services = _services()
    name = writer_for(request.args.get("format"), request.headers.get("Accept", ""))
    if name is None:
        raise ApiError(400, f"format must be one of {', '.join(WRITERS)}")
    if not services.heavy.acquire(blocking=False):
        raise busy(services.config.TRAINING_SET_CONCURRENCY)
    try:
        spine, features = _read_spine(services.config)
        try:
            indexed = services.as_of_indexes.current(features) if services.as_of_indexes else {}
            chunks = training_sets.compute(spine, features, services.warehouse, indexed)
            first = next(chunks, [])  # a warehouse that fails at once is a 503, not a cut-off table
        except BaseException:
            spine.close()
            raise
    except BaseException:
        services.heavy.release()
        raise
    mimetype, write = WRITERS[name]

    def generate():
        try:
            yield from write(spine, features, first, chunks)
        finally:
            spine.close()
            services.heavy.release()
        if services.as_of_indexes is not None and len(indexed) < len(features):
            services.as_of_indexes.build_missing(features, spine.rows)

    from_index = ",".join(f.feature_type for f in features if f.feature_type in indexed)
    return Response(stream_with_context(generate()), mimetype=mimetype,
                    headers={"X-Total-Rows": str(spine.rows), "X-As-Of-Indexed": from_index})
