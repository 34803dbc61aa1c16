"""One feature's statistics over an extraction run, built from the chunks the run already streams.

A run encodes each value to its JSON once (what Redis stores and the API serves); the sketch reads
those same bytes a chunk at a time, so the statistics describe exactly the values served and
need no second query. Per chunk the work is vectorized: numpy parses the chunk's numbers (or
ISO datetimes) in one call and the datasketches sketches take whole arrays, so a value costs a
few hundred nanoseconds (BENCHMARKS.md, section 13), not a Python call per sketch.

Numbers (integer, float) and datetimes: exact count, nulls, min, max and mean; a KLL sketch for
quantiles and the histogram (datetimes as epoch seconds), a CPC sketch for distinct values.
Strings and booleans: a frequent-items sketch for the top values, CPC for distinct values.

A sketch serializes to a JSON-able dict (`state()`), so the partitions of a run, computed by
different workers, are merged into the statistics of the whole table (`merge`).
"""

from __future__ import annotations

import base64
import collections
import logging
from datetime import datetime, timedelta

import datasketches as ds
import numpy as np
import orjson

from feature_store.registry import DataType

log = logging.getLogger(__name__)

NUMERIC = frozenset({DataType.INTEGER, DataType.FLOAT, DataType.DATETIME})
KLL_K = 200  # normalized rank error about 1.65% (datasketches' default)
CPC_LG_K = 11  # relative standard error about 1.2%
FREQUENT_LG_MAX = 7  # up to 96 distinct values counted exactly, more approximately
QUANTILE_RANKS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
HISTOGRAM_BINS = 10
TOP_VALUES = 10
_NULL = b"null"
_EPOCH = np.datetime64("1970-01-01T00:00:00", "us")


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class FeatureSketch:
    """The statistics of one feature's values, accumulated chunk by chunk.

    Args:
        data_type: the feature's; decides how a value's JSON is read and which sketches it feeds.
    """

    def __init__(self, data_type: DataType) -> None:
        self.data_type = DataType(data_type)
        self.numeric = self.data_type in NUMERIC
        self.count = 0
        self.nulls = 0
        self.total: int | float = 0  # sum of the non-null values (datetimes: microseconds)
        self.low: int | float | None = None  # exact min and max (datetimes: microseconds)
        self.high: int | float | None = None
        self.distinct = ds.cpc_sketch(CPC_LG_K)
        self.kll = ds.kll_doubles_sketch(KLL_K) if self.numeric else None
        self.frequent = None if self.numeric else ds.frequent_strings_sketch(FREQUENT_LG_MAX)
        self.error: str | None = None

    # --- accumulation ------------------------------------------------------------------------
    def update(self, chunk: list[tuple[int, bytes]]) -> None:
        """Add a chunk of (entity id, value JSON), as the run spools it. A value the sketch cannot
        read sets `error` and stops it: the run goes on, without this feature's statistics
        (statistics never fail a run)."""
        if self.error is not None or not chunk:
            return
        try:
            self._update(chunk)
        except (ValueError, TypeError, OverflowError) as exc:  # orjson's decode error is a ValueError
            self.error = f"{exc.__class__.__name__}: {exc}"
            log.warning("no statistics for this run's %s values: %s", self.data_type.value, self.error)

    def _update(self, chunk: list[tuple[int, bytes]]) -> None:
        self.count += len(chunk)
        if not self.numeric:
            self._update_frequent(collections.Counter([value for _, value in chunk]))
            return
        if self.data_type is DataType.DATETIME:
            texts = [value[1:-1] for _, value in chunk if value != _NULL]
            self.nulls += len(chunk) - len(texts)
            if texts:
                self._update_numbers(_micros(texts))
            return
        raw = np.array([value for _, value in chunk])
        present = raw[raw != _NULL]
        self.nulls += len(chunk) - len(present)
        if len(present):
            self._update_numbers(_numbers(present, self.data_type))

    def _update_numbers(self, numbers: np.ndarray) -> None:
        low, high = numbers.min().item(), numbers.max().item()
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        if numbers.dtype == np.int64:
            # Exact for integers and microseconds: the high and low 32 bits summed apart, so no
            # chunk's sum overflows int64 (10,000 datetimes in microseconds sum past 2**63).
            self.total += (int((numbers >> 32).sum()) << 32) + int((numbers & 0xFFFFFFFF).sum())
        else:
            self.total += float(numbers.sum(dtype=np.float64))
        if self.data_type is DataType.DATETIME:
            self.kll.update(numbers.astype(np.float64) / 1e6)
        else:
            self.kll.update(numbers.astype(np.float64, copy=False))
        update = self.distinct.update
        collections.deque(map(update, np.unique(numbers).tolist()), 0)

    def _update_frequent(self, counts: collections.Counter) -> None:
        null = counts.pop(_NULL, 0)
        self.nulls += null
        update, distinct = self.frequent.update, self.distinct.update
        for encoded, n in counts.items():
            text = _category(encoded)
            update(text, n)
            distinct(text)

    def merge(self, other: FeatureSketch) -> None:
        """Add another part of the same feature's values (another partition of the run)."""
        self.count += other.count
        self.nulls += other.nulls
        self.total += other.total
        for bound, pick in (("low", min), ("high", max)):
            mine, theirs = getattr(self, bound), getattr(other, bound)
            setattr(self, bound, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        union = ds.cpc_union(CPC_LG_K)
        union.update(self.distinct)
        union.update(other.distinct)
        self.distinct = union.get_result()
        if self.numeric:
            self.kll.merge(other.kll)
        else:
            self.frequent.merge(other.frequent)

    # --- serialized form (partitions, the stored latest sketch) -------------------------------
    def state(self) -> dict:
        """A JSON-able form of the whole sketch, for from_state()."""
        # An exact integer sum outgrows JSON's 64-bit integers (a million datetimes in microseconds
        # sum past 2**63): kept as its decimal digits.
        total = str(self.total) if isinstance(self.total, int) else self.total
        body = {"data_type": self.data_type.value, "count": self.count, "nulls": self.nulls, "total": total,
                "low": self.low, "high": self.high, "distinct": _b64(self.distinct.serialize()), "error": self.error}
        if self.numeric:
            body["kll"] = _b64(self.kll.serialize())
        else:
            body["frequent"] = _b64(self.frequent.serialize())
        return body

    @classmethod
    def from_state(cls, body: dict) -> FeatureSketch:
        sketch = cls(DataType(body["data_type"]))
        sketch.count, sketch.nulls = body["count"], body["nulls"]
        sketch.total = int(body["total"]) if isinstance(body["total"], str) else body["total"]
        sketch.low, sketch.high, sketch.error = body["low"], body["high"], body.get("error")
        sketch.distinct = ds.cpc_sketch.deserialize(_unb64(body["distinct"]))
        if sketch.numeric:
            sketch.kll = ds.kll_doubles_sketch.deserialize(_unb64(body["kll"]))
        else:
            sketch.frequent = ds.frequent_strings_sketch.deserialize(_unb64(body["frequent"]))
        return sketch

    # --- what is reported --------------------------------------------------------------------
    @property
    def present(self) -> int:
        """How many values are not null."""
        return self.count - self.nulls

    def value(self, number: float) -> int | float | str:
        """A number of the sketch's scale (KLL: epoch seconds for datetimes) as the feature's
        values are served: an integer, a float, or an ISO 8601 datetime."""
        if self.data_type is DataType.DATETIME:
            moment = datetime(1970, 1, 1) + timedelta(microseconds=round(number * 1e6))
            return moment.isoformat()
        if self.data_type is DataType.INTEGER and float(number).is_integer():
            return int(number)
        return float(number)

    def summary(self) -> dict:
        """The statistics as stored and served (see statistics.py for the whole entry)."""
        body: dict = {"count": self.count, "nulls": self.nulls,
                      "null_fraction": round(self.nulls / self.count, 6) if self.count else 0.0,
                      "distinct": min(self.present, round(self.distinct.get_estimate()))}
        if self.numeric:
            body.update(self._numeric_summary())
        else:
            items = self.frequent.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_POSITIVES)
            items.sort(key=lambda item: (-item[1], item[0]))
            body["top_values"] = [{"value": _served(self.data_type, item), "count": int(estimate)}
                                  for item, estimate, _, _ in items[:TOP_VALUES]]
        return body

    def _numeric_summary(self) -> dict:
        if self.present == 0:
            return {"min": None, "max": None, "mean": None, "quantiles": {}, "histogram": None}
        scale = 1e6 if self.data_type is DataType.DATETIME else 1.0
        quantiles = self.kll.get_quantiles(list(QUANTILE_RANKS), True)
        return {
            "min": self.value(self.low / scale), "max": self.value(self.high / scale),
            "mean": self.value(self.total / self.present / scale) if self.data_type is DataType.DATETIME
            else self.total / self.present,
            "quantiles": {f"p{round(rank * 100):02d}": self.value(q) for rank, q in zip(QUANTILE_RANKS, quantiles,
                                                                                         strict=True)},
            "histogram": self._histogram(self.low / scale, self.high / scale),
        }

    def _histogram(self, low: float, high: float) -> dict:
        """About HISTOGRAM_BINS bins from min to max (one per value for a few integers), with the
        count of values in each estimated from the KLL sketch: what a chart draws."""
        if self.data_type is DataType.INTEGER and high - low < HISTOGRAM_BINS * 2:
            edges = [low + i for i in range(int(high - low) + 2)]
        elif high == low:
            edges = [low, high]
        else:
            step = (high - low) / HISTOGRAM_BINS
            edges = [low + i * step for i in range(HISTOGRAM_BINS)] + [high]
            if self.data_type is DataType.DATETIME and step >= 2:  # inner edges on whole seconds
                edges[1:-1] = [float(round(edge)) for edge in edges[1:-1]]
        masses = self.kll.get_pmf(edges[1:-1]) if len(edges) > 2 else [1.0]
        return {"edges": [self.value(edge) for edge in edges],
                "counts": [round(mass * self.present) for mass in masses]}


def _numbers(present: np.ndarray, data_type: DataType) -> np.ndarray:
    """The chunk's JSON numbers as one array: int64 for integers that fit, else float64."""
    if data_type is DataType.INTEGER:
        try:
            return present.astype(np.int64)
        except (ValueError, OverflowError):
            pass  # beyond 64 bits: approximated as floats
    return present.astype(np.float64)


def _micros(texts: list[bytes]) -> np.ndarray:
    """ISO 8601 datetimes (as served) as int64 microseconds since the epoch."""
    try:
        moments = np.array(texts).astype("datetime64[us]")
    except ValueError:  # a form numpy does not read: Python's parser, one by one
        moments = np.array([datetime.fromisoformat(text.decode()) for text in texts], dtype="datetime64[us]")
    return (moments - _EPOCH).astype(np.int64)


def _category(encoded: bytes) -> str:
    """A string or boolean value's JSON as the text the frequent-items sketch counts."""
    value = orjson.loads(encoded)
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _served(data_type: DataType, item: str):
    return orjson.loads(item) if data_type is DataType.BOOLEAN else item
