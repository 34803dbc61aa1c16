"""FeatureStoreClient: the feature store's HTTP API from Python.

Which calls are retried, and why (on 503, a lost connection or a timeout; never on another 4xx or
5xx answer, which would answer the same again):

- Reads (discovery, feature sets, inference, training, training sets, run status and history):
  on 503 and on any connection error or timeout. They change nothing a second time (a value
  computed on demand is stored once, the same either way), so repeating one is safe. A spine that
  is a one-shot iterator is the exception: once its first bytes were sent it cannot be sent again,
  so the call is then not retried (a DataFrame, list or tuple is sent again from the start).
- Starting an extraction (POST /extract): only when nothing was sent (the connection was refused,
  or not made in time), and on 503 (the server refused it before a run was under way: Redis
  unreachable). Not after a request went out without an answer (connection lost, read timeout):
  the server may have started a run, and a second request would start another once the first
  ended (a request made while a run is in progress joins it, so even then at most one run more).

Delays grow as backoff * 2**attempt (0.5, 1, 2 s by default); a 503's Retry-After is honoured up
to 30 s. After the last retry the error is raised: Unavailable (503, no connection) or
RequestTimeout, with the server's message and request id when it answered.
"""

from __future__ import annotations

import json
import numbers
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import IO, Any

import requests
import urllib3.exceptions

from feature_store_client import errors
from feature_store_client.errors import (
    ExtractionFailed,
    ExtractionTimeout,
    FeatureStoreError,
    IncompleteResponse,
    RequestTimeout,
    Unavailable,
)
from feature_store_client.models import Feature, FeatureSet, Run, Value
from feature_store_client.spines import Sent, as_dataframe, dataframe_csv, records_ndjson

__version__ = "0.1.0"

API_PREFIX = "/api/v1/features"
MAX_RETRY_AFTER = 30.0
# Just under the server's MAX_CONTENT_LENGTH (2 MiB) default, for one /training request body.
DEFAULT_MAX_BODY_BYTES = 2_000_000

# Retry policies (see the module docstring).
_READ = "read"
_START = "start"


class FeatureStoreWarning(UserWarning):
    """Something the server said that does not fail the call (e.g. no worker listens on the
    extraction queue, so a run stays queued until one does)."""


def _nothing_sent(exc: requests.RequestException) -> bool:
    """True when the request never left: the connection was refused or not made in time."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def _instant(as_of: Any, where: str) -> str:
    """An as_of as the server reads it: ISO 8601 (a naive datetime is UTC, an aware one is
    converted by the server)."""
    if isinstance(as_of, str):
        return as_of
    if isinstance(as_of, datetime | date):
        if as_of != as_of:  # pandas NaT
            raise ValueError(f"{where}: as_of is NaT")
        return as_of.isoformat()
    raise TypeError(f"{where}: as_of must be a datetime, a date or an ISO 8601 string, got {type(as_of).__name__}")


def _entity_id(entity_id: Any, where: str) -> str | int:
    if isinstance(entity_id, bool) or not isinstance(entity_id, str | numbers.Integral):
        raise TypeError(f"{where}: entity_id must be a string or an integer, got {type(entity_id).__name__}")
    return entity_id if isinstance(entity_id, str) else int(entity_id)


def _item(raw: Any, where: str) -> dict:
    """One values() item as the server reads it: from (feature_type, entity_id[, as_of]) or a dict."""
    if isinstance(raw, Mapping):
        feature_type, entity_id, as_of = raw.get("feature_type"), raw.get("entity_id"), raw.get("as_of")
    elif isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) in (2, 3):
        feature_type, entity_id, as_of = raw[0], raw[1], raw[2] if len(raw) == 3 else None
    else:
        raise TypeError(f"{where}: expected (feature_type, entity_id[, as_of]) or a dict with those keys")
    if not isinstance(feature_type, str):
        raise TypeError(f"{where}: feature_type must be a string")
    item = {"feature_type": feature_type, "entity_id": _entity_id(entity_id, where)}
    if as_of is not None:
        item["as_of"] = _instant(as_of, where)
    return item


class _Progress:
    """One line on a stream: the run's status and how long it has been waited for. Redrawn in
    place on a terminal; elsewhere (a log) written only when the status changes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.last = None
        self.width = 0

    def show(self, run: Run, workers: int | None = None) -> None:
        waited = time.monotonic() - self.started
        if run.done:
            line = self._final(run, waited)
        else:
            line = f"extraction {run.job_id}: {run.status} ({waited:.1f} s)"
            if workers == 0:
                line += ", no worker listens on the queue"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width) + ("\n" if run.done else ""))
            self.width = len(line)
        elif run.status != self.last or run.done:
            self.stream.write(line + "\n")
        self.last = run.status
        self.stream.flush()

    @staticmethod
    def _final(run: Run, waited: float) -> str:
        counts = run.features_extracted or {}
        took = run.seconds if run.seconds is not None else waited
        line = (f"extraction {run.job_id}: {run.status}, {run.total_features or 0:,} values of {len(counts)} "
                f"feature{'s' if len(counts) != 1 else ''} in {took:.1f} s")
        if run.failed_features:
            line += f"; failed: {', '.join(sorted(run.failed_features))}"
        return line


class FeatureStoreClient:
    """A client of one feature store deployment.

    Args:
        base_url: the server's root (`http://localhost:25000`); a trailing `/api/v1/features` is
            accepted too.
        api_key: sent as `X-API-Key` (a read key for values and training sets; an admin key for
            extraction).
        timeout: seconds to wait for a connection and for each read of an answer.
        retries: how many times a call is repeated on 503 or a lost connection (see the module
            docstring for which calls, and when).
        backoff: the first retry's delay in seconds; each next one doubles it.
        max_items: most items per /training request that values() sends (the server's
            TRAINING_MAX_ITEMS).
        max_body_bytes: largest /training body values() sends (under the server's MAX_CONTENT_LENGTH).
        session: a requests.Session to use (one is made otherwise).
    """

    def __init__(self, base_url: str = "http://localhost:25000", api_key: str | None = None, timeout: float = 10,
                 retries: int = 3, backoff: float = 0.5, *, max_items: int = 10_000,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, session: requests.Session | None = None) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        base = base_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[:-len(API_PREFIX)]
        self.base_url = base
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_items = max_items
        self.max_body_bytes = max_body_bytes
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"feature-store-client/{__version__}"
        self.session.headers["Accept"] = "application/json"
        if api_key:
            self.session.headers["X-API-Key"] = api_key
        self._sleep = time.sleep

    # -- plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> FeatureStoreClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStoreClient({self.base_url!r})"

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
            except ValueError:  # an HTTP date: keep our own delay
                pass
        return delay

    def _request(self, method: str, path: str, *, policy: str = _READ, params: dict | None = None,
                 json_body: Any = None, body: Callable[[], Any] | None = None, one_shot: Sent | None = None,
                 headers: dict | None = None, stream: bool = False, timeout: float | None = None
                 ) -> requests.Response:
        """Send one call, retried per `policy`; an error answer raises its FeatureStoreError.

        `body` makes the request body for each attempt (None: `json_body`, or no body). A body that
        cannot be made again (a one-shot iterator) comes with `one_shot`, which tells whether its
        first bytes left: the call is then retried only while none did.
        """
        url = self.base_url + path
        timeout = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            data = body() if body is not None else None
            try:
                response = self.session.request(method, url, params=params, json=json_body, data=data,
                                                headers=headers, timeout=timeout, stream=stream)
            except requests.RequestException as exc:
                if not isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
                    raise FeatureStoreError(f"{method} {path} could not be sent: {exc}") from exc
                repeatable = one_shot is None or not one_shot.started
                if attempt < self.retries and repeatable and (policy == _READ or _nothing_sent(exc)):
                    self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                if isinstance(exc, requests.exceptions.Timeout) and not isinstance(
                        exc, requests.exceptions.ConnectTimeout):
                    raise RequestTimeout(f"{method} {path}: no answer from {self.base_url} within {timeout} s"
                                         f"{tries}") from exc
                if _nothing_sent(exc):
                    raise Unavailable(f"{method} {path}: cannot connect to {self.base_url}{tries}") from exc
                raise Unavailable(f"{method} {path}: the connection to {self.base_url} broke before an answer"
                                  f"{tries}") from exc
            if response.status_code == 503 and attempt < self.retries and (one_shot is None or not one_shot.started):
                retry_after = response.headers.get("Retry-After")
                response.close()
                self._sleep(self._delay(attempt, retry_after))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise self._error(response)
            return response

    @staticmethod
    def _error(response: requests.Response) -> FeatureStoreError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        finally:
            response.close()
        if not isinstance(body, dict):
            text = (response.text or "").strip()
            body = {}
            message = f"HTTP {status} {response.reason or ''}".strip() + (f": {text[:200]}" if text else "")
        else:
            message = str(body.get("error") or f"HTTP {status} {response.reason or ''}".strip())
        request_id = body.get("request_id") or response.headers.get("X-Request-ID")
        if "failed_features" in body and status >= 500:
            return ExtractionFailed(message, job_id=body.get("job_id"), failed_features=body.get("failed_features"),
                                    features_extracted=body.get("features_extracted"),
                                    total_features=body.get("total_features", 0), status=status,
                                    request_id=request_id, body=body)
        return errors.error_for_status(status)(message, status=status, request_id=request_id, body=body)

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise FeatureStoreError(f"{method} {path}: the answer is not JSON", status=response.status_code,
                                    request_id=response.headers.get("X-Request-ID")) from None

    # -- discovery --------------------------------------------------------------------------------

    def features(self) -> list[Feature]:
        """Every feature of the catalog (GET /discovery), in declaration order."""
        return [Feature.from_json(entry) for entry in self._json("GET", f"{API_PREFIX}/discovery")]

    def feature_sets(self) -> list[FeatureSet]:
        """The named feature sets (GET /feature-sets)."""
        return [FeatureSet.from_json(entry) for entry in self._json("GET", f"{API_PREFIX}/feature-sets")]

    # -- values -----------------------------------------------------------------------------------

    def lookup(self, feature_type: str, entity_id: str | int, as_of: datetime | date | str | None = None) -> Value:
        """One value with when it was computed (POST /inference). `as_of`: the value as the
        warehouse's rows define it at that instant (a naive datetime is UTC).

        Raises:
            NotFound: an unknown feature type, or an entity that does not exist (at `as_of`).
        """
        body = {"feature_type": feature_type, "entity_id": _entity_id(entity_id, "lookup")}
        if as_of is not None:
            body["as_of"] = _instant(as_of, "lookup")
        return Value.from_json(self._json("POST", f"{API_PREFIX}/inference", json_body=body))

    def value(self, feature_type: str, entity_id: str | int, as_of: datetime | date | str | None = None) -> Any:
        """One feature value (see lookup())."""
        return self.lookup(feature_type, entity_id, as_of).value

    def feature_set(self, name: str, entity_id: str | int, as_of: datetime | date | str | None = None
                    ) -> dict[str, Any]:
        """{feature_type: value} of feature set `name` for one entity, read in one call.

        Raises:
            NotFound: an unknown feature set, or an entity that does not exist (at `as_of`).
        """
        body = {"feature_set": name, "entity_id": _entity_id(entity_id, "feature_set")}
        if as_of is not None:
            body["as_of"] = _instant(as_of, "feature_set")
        answer = self._json("POST", f"{API_PREFIX}/inference", json_body=body)
        values = answer.get("values") or {}
        return {feature_type: entry.get("feature_value") for feature_type, entry in values.items()}

    def _chunks(self, items: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
        """(offset, encoded items) per /training request: at most max_items, within max_body_bytes."""
        start, chunk, size = 0, [], 0
        for i, encoded in enumerate(items):
            if chunk and (len(chunk) >= self.max_items or size + len(encoded) + 1 > self.max_body_bytes - 20):
                yield start, chunk
                start, chunk, size = i, [], 0
            chunk.append(encoded)
            size += len(encoded) + 1
        if chunk:
            yield start, chunk

    def values(self, items: Iterable[Any]) -> list[Value]:
        """Many values, in the order asked: items are (feature_type, entity_id) or
        (feature_type, entity_id, as_of) tuples, or dicts with those keys.

        Sent as POST /training requests of at most `max_items` items each (and within
        `max_body_bytes`), one after the other. An item the server has no value for (unknown
        feature type, an entity that does not exist) does not raise: its Value has `ok` False and
        `error` saying why.

        Raises:
            TypeError, ValueError: a malformed item (naming its index), before anything is sent.
            BadRequest: the server refused a request (`offset` on the exception: the index of its
                first item; the server's `features[i]` is item offset + i).
        """
        encoded = [json.dumps(_item(raw, f"items[{i}]"), separators=(",", ":")).encode()
                   for i, raw in enumerate(items)]
        results: list[Value] = []
        for offset, chunk in self._chunks(encoded):
            payload = b'{"features":[' + b",".join(chunk) + b"]}"
            try:
                answer = self._json("POST", f"{API_PREFIX}/training", body=lambda p=payload: p,
                                    headers={"Content-Type": "application/json"})
            except FeatureStoreError as exc:
                exc.offset = offset
                raise
            got = answer.get("results") or []
            if len(got) != len(chunk):
                raise IncompleteResponse(f"POST /training answered {len(got)} results for {len(chunk)} items")
            results.extend(Value.from_json(entry) for entry in got)
        return results

    # -- training sets ----------------------------------------------------------------------------

    def training_set(self, spine: Any, feature_set: str | None = None, feature_types: Sequence[str] | None = None,
                     format: str = "pandas", *, chunk_rows: int = 10_000, timeout: float | None = None):
        """A leakage-free training set: one row per spine row, in spine order, with each feature's
        value as of that row's instant (POST /training-sets).

        Args:
            spine: a pandas DataFrame, or an iterable of dicts, with an `entity_id` column (or the
                entity type's name, e.g. `user_id`), `as_of` (datetimes or ISO 8601 strings; naive
                means UTC) and any other columns (labels: passed through).
            feature_set / feature_types: the columns, a feature set's name or a list of feature
                types of one entity type (one of the two).
            format: "pandas" (a DataFrame) or "arrow" (a pyarrow Table).
            chunk_rows: spine rows per piece of the upload.
            timeout: seconds for each read of the answer (the first comes once the whole spine
                was read and its first chunk computed); the client's timeout by default.

        The spine is uploaded as it is produced (chunked transfer): a DataFrame as CSV, an
        iterable of dicts as NDJSON (its values keep their JSON types). The answer is asked for
        as Parquet, spooled to a temporary file and read with pyarrow; columns are `entity_id`,
        `as_of` (UTC), the spine's other columns, `entity_existed`, then one per feature. A
        DataFrame spine's other columns come back as they were (their dtypes, the spine's index
        on the result). Integer feature columns are pandas' nullable Int64 (a value is null for an
        entity that did not exist yet).

        Raises:
            BadRequest: the server refused the spine or the columns (naming the line).
            IncompleteResponse: fewer rows came back than the spine had (X-Total-Rows tells).
        """
        if (feature_set is None) == (feature_types is None):
            raise ValueError("give either feature_set (a name) or feature_types (a list of feature types)")
        if format not in ("pandas", "arrow"):
            raise ValueError(f"format must be 'pandas' or 'arrow', got {format!r}")
        pa, pq = _import_arrow()
        pd = _import_pandas() if format == "pandas" else None
        params = {"format": "parquet"}
        if feature_set is not None:
            params["feature_set"] = feature_set
        else:
            if isinstance(feature_types, str) or not list(feature_types):
                raise ValueError("feature_types must be a non-empty list of feature types")
            params["feature_types"] = ",".join(feature_types)
        frame = as_dataframe(spine)
        one_shot = None
        if frame is not None:
            content_type, make = "text/csv", lambda sent: dataframe_csv(frame, chunk_rows, sent)
        elif isinstance(spine, Mapping | str | bytes):
            raise TypeError("spine must be a pandas DataFrame or an iterable of dicts (rows)")
        elif isinstance(spine, Sequence):  # a list or tuple of rows: sent again from the start on a retry
            content_type, make = "application/x-ndjson", lambda sent: records_ndjson(spine, chunk_rows, sent)
        else:  # an iterator or generator: once started, it cannot be sent again
            content_type, one_shot = "application/x-ndjson", Sent()
            rows = records_ndjson(iter(spine), chunk_rows, one_shot)
            make = lambda sent: rows
        attempts: list[Sent] = []

        def body():
            attempts.append(one_shot or Sent())
            return make(attempts[-1])

        response = self._request("POST", f"{API_PREFIX}/training-sets", params=params, body=body, one_shot=one_shot,
                                 headers={"Content-Type": content_type, "Accept": "application/vnd.apache.parquet"},
                                 stream=True, timeout=timeout)
        announced = response.headers.get("X-Total-Rows")
        request_id = response.headers.get("X-Request-ID")
        with tempfile.TemporaryFile(prefix="feature-store-client-") as spool:
            try:
                for piece in response.iter_content(1 << 20):
                    spool.write(piece)
            except requests.RequestException as exc:
                raise IncompleteResponse(f"the training set was cut off mid-stream ({announced} rows announced): "
                                         f"{exc.__class__.__name__}", status=response.status_code,
                                         request_id=request_id) from exc
            finally:
                response.close()
            spool.seek(0)
            try:
                table = pq.read_table(spool)
            except (pa.ArrowException, OSError) as exc:
                raise IncompleteResponse(f"the training set is not a complete Parquet file ({announced} rows "
                                         f"announced): {exc}", status=response.status_code,
                                         request_id=request_id) from exc
        rows_sent = attempts[-1].rows
        if announced is None or int(announced) != table.num_rows or table.num_rows != rows_sent:
            raise IncompleteResponse(f"the training set has {table.num_rows} rows; the server announced {announced} "
                                     f"(X-Total-Rows) and the spine had {rows_sent}", status=response.status_code,
                                     request_id=request_id)
        passed = table.column_names[2:table.column_names.index("entity_existed")]
        if format == "arrow":
            if frame is not None:
                table = _restore_arrow(pa, table, frame, passed)
            return table
        result = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}.get)
        result["entity_existed"] = result["entity_existed"].astype(bool)
        if frame is not None:
            for name in passed:
                if name in frame.columns:
                    result[name] = frame[name].array
            result.index = frame.index
        return result

    # -- extraction -------------------------------------------------------------------------------

    def extract(self, feature_types: Sequence[str] | None = None, wait: bool = True,
                progress: bool | IO[str] = False, timeout: float | None = None, poll_interval: float = 1.0) -> Run:
        """Refresh every value (or those of `feature_types`) from the warehouse: POST
        /extract?wait=false, then follow GET /extract/<job_id> until the run ended.

        Args:
            feature_types: the features to refresh; None: all of them.
            wait: False returns the run as accepted (job_id, status), without following it.
            progress: True writes one line of progress to stderr (or to the given text stream).
            timeout: most seconds to wait for the run (None: as long as it takes).
            poll_interval: most seconds between two looks at the run.

        Returns:
            The finished Run: `features_extracted`, `total_features`, `result` (stages, removed).

        Raises:
            ExtractionFailed: the run ended failed (`failed_features`, `features_extracted`).
            ExtractionTimeout: `timeout` ran out first (the run goes on).
            Forbidden: a read key (extraction needs an admin key).
        """
        body = None
        if feature_types is not None:
            if isinstance(feature_types, str):
                raise TypeError("feature_types must be a list of feature types, not a string")
            body = {"feature_types": list(feature_types)}
        accepted = Run.from_json(self._json("POST", f"{API_PREFIX}/extract", policy=_START,
                                            params={"wait": "false"}, json_body=body))
        if accepted.warning:
            warnings.warn(accepted.warning, FeatureStoreWarning, stacklevel=2)
        if not wait:
            return accepted
        shown = _Progress(sys.stderr if progress is True else progress) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = min(0.1, poll_interval)
        while True:
            run = self.run(accepted.job_id)
            if shown is not None:
                shown.show(run, accepted.workers)
            if run.done:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if shown is not None and shown.tty:
                    shown.stream.write("\n")
                raise ExtractionTimeout(f"extraction {run.job_id} still {run.status} after {timeout} s "
                                        "(it goes on: follow it with run(job_id))", job_id=run.job_id, run=run)
            self._sleep(interval if remaining is None else min(interval, remaining))
            interval = min(interval * 2, poll_interval)
        if run.status == "failed":
            raise ExtractionFailed(run.error or "the extraction failed", job_id=run.job_id,
                                   failed_features=run.failed_features, features_extracted=run.features_extracted,
                                   total_features=run.total_features or 0, run=run, body=run.raw)
        return run

    def run(self, job_id: str) -> Run:
        """One extraction run's status (GET /extract/<job_id>). Raises NotFound (unknown, or expired)."""
        if not isinstance(job_id, str) or not job_id or "/" in job_id:
            raise ValueError(f"not a job id: {job_id!r}")
        return Run.from_json(self._json("GET", f"{API_PREFIX}/extract/{job_id}"))

    def runs(self, limit: int = 20) -> list[Run]:
        """The latest extraction runs, newest first (GET /extract; limit 1 to 100)."""
        answer = self._json("GET", f"{API_PREFIX}/extract", params={"limit": str(limit)})
        return [Run.from_json(entry) for entry in answer.get("runs", [])]


def _restore_arrow(pa, table, frame, passed: list[str]):
    """The spine's own columns in place of the CSV's text (their types, as the DataFrame had them)."""
    for name in passed:
        if name not in frame.columns:
            continue
        try:
            column = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            continue  # keep the server's text
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def _import_arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("training_set() reads Parquet with pyarrow: pip install 'feature-store-client[arrow]' "
                          "(or '[pandas]' for DataFrames)") from None
    return pa, pq


def _import_pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("format='pandas' needs pandas: pip install 'feature-store-client[pandas]'") from None
    return pd
