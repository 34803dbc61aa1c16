"""Run statistics and drift (services/sketches.py, drift.py) against plain-Python computations
over the values themselves: exact figures exactly, sketched ones within the sketches' bounds."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import orjson
import pytest

from feature_store.registry import DataType
from feature_store.services import drift
from feature_store.services.sketches import KLL_K, FeatureSketch

RANK_ERROR = 0.0165 * 1.5  # KLL k=200's normalized rank error, with a margin (it holds at 99%)


def chunks(values: list, size: int = 1000) -> list[list[tuple[int, bytes]]]:
    """The values as a run spools them: (entity id, value JSON) in chunks."""
    encoded = [(i, orjson.dumps(v)) for i, v in enumerate(values)]
    return [encoded[i:i + size] for i in range(0, len(encoded), size)]


def sketch_of(data_type: DataType, values: list, size: int = 1000) -> FeatureSketch:
    sketch = FeatureSketch(data_type)
    for chunk in chunks(values, size):
        sketch.update(chunk)
    return sketch


def quantile(values: list, rank: float):
    """The smallest value whose normalized rank is at least `rank` (KLL's inclusive quantile)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank * len(ordered)) - 1)]


def rank_of(values: list, value) -> float:
    return sum(1 for v in values if v <= value) / len(values)


def plain_psi(before: list[float], now: list[float]) -> float:
    return sum((max(n, 1e-4) - max(b, 1e-4)) * math.log(max(n, 1e-4) / max(b, 1e-4))
               for b, n in zip(before, now, strict=True))


def plain_shares(values: list, edges: list) -> list[float]:
    """null share, then (-inf, e1], (e1, e2], ..., (ek, inf) shares, over every value."""
    present = [v for v in values if v is not None]
    bounds = [-math.inf, *edges, math.inf]
    return [(len(values) - len(present)) / len(values)] + [
        sum(1 for v in present if lo < v <= hi) / len(values) for lo, hi in zip(bounds, bounds[1:], strict=False)]


def plain_ks(a: list, b: list) -> float:
    points = sorted(set(a) | set(b))
    return max(abs(rank_of(a, p) - rank_of(b, p)) for p in points)


def test_integer_statistics_are_the_values_own():
    rng = random.Random(1)
    values = [rng.randint(-50, 5000) if rng.random() > 0.2 else None for _ in range(KLL_K - 20)]
    present = [v for v in values if v is not None]
    summary = sketch_of(DataType.INTEGER, values, size=37).summary()
    assert (summary["count"], summary["nulls"]) == (len(values), len(values) - len(present))
    assert (summary["min"], summary["max"]) == (min(present), max(present))
    assert summary["mean"] == sum(present) / len(present)
    assert summary["distinct"] == pytest.approx(len(set(present)), abs=3)
    for name, q in summary["quantiles"].items():  # fewer values than k: the sketch holds them all
        assert q == quantile(present, int(name[1:]) / 100), name
    assert sum(summary["histogram"]["counts"]) == len(present)


def test_large_numbers_are_within_the_sketches_bounds():
    rng = random.Random(2)
    values = [rng.lognormvariate(3, 1) for _ in range(60_000)]
    summary = sketch_of(DataType.FLOAT, values, size=10_000).summary()
    assert summary["min"] == min(values) and summary["max"] == max(values)
    assert summary["mean"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert summary["distinct"] == pytest.approx(len(set(values)), rel=0.05)
    for name, q in summary["quantiles"].items():
        assert abs(rank_of(values, q) - int(name[1:]) / 100) < RANK_ERROR, name


def test_datetime_statistics_in_iso_form():
    start = datetime(2024, 3, 1)
    moments = [start + timedelta(seconds=i * 3607, microseconds=i % 3) for i in range(150)] + [None] * 10
    summary = sketch_of(DataType.DATETIME, moments, size=64).summary()
    present = [m for m in moments if m is not None]
    assert summary["nulls"] == 10 and summary["distinct"] == pytest.approx(len(present), abs=3)
    assert summary["min"] == min(present).isoformat() and summary["max"] == max(present).isoformat()
    mean = start + sum((m - start for m in present), timedelta()) / len(present)
    assert abs(datetime.fromisoformat(summary["mean"]) - mean) <= timedelta(microseconds=1)
    assert summary["quantiles"]["p50"] == quantile(present, 0.5).isoformat()
    assert len(summary["histogram"]["edges"]) == len(summary["histogram"]["counts"]) + 1


def test_string_top_values_are_counted():
    rng = random.Random(3)
    values = [rng.choices(["Credit", "Debit", "Prepaid"], [5, 3, 2])[0] for _ in range(20_000)] + [None] * 7
    summary = sketch_of(DataType.STRING, values).summary()
    expected = sorted(((values.count(v), v) for v in {"Credit", "Debit", "Prepaid"}), reverse=True)
    assert summary["top_values"] == [{"value": v, "count": n} for n, v in expected]
    assert (summary["nulls"], summary["distinct"]) == (7, 3)


def test_partitions_merge_into_the_whole_tables_statistics():
    rng = random.Random(4)
    values = [rng.randint(0, 10**6) if rng.random() > 0.1 else None for _ in range(30_000)]
    parts = [sketch_of(DataType.INTEGER, values[i::3]) for i in range(3)]
    merged = FeatureSketch.from_state(orjson.loads(orjson.dumps(parts[0].state())))
    for part in parts[1:]:
        merged.merge(FeatureSketch.from_state(orjson.loads(orjson.dumps(part.state()))))
    whole, present = merged.summary(), [v for v in values if v is not None]
    assert (whole["count"], whole["nulls"], whole["min"], whole["max"]) == (
        len(values), len(values) - len(present), min(present), max(present))
    assert whole["mean"] == sum(present) / len(present)
    assert whole["distinct"] == pytest.approx(len(set(present)), rel=0.05)
    for name, q in whole["quantiles"].items():
        assert abs(rank_of(present, q) - int(name[1:]) / 100) < RANK_ERROR, name


def test_numeric_psi_and_ks_match_a_plain_computation():
    rng = random.Random(5)
    before = [rng.randint(60, 3600) if rng.random() > 0.1 else None for _ in range(180)]
    after = [rng.randint(600, 9000) if rng.random() > 0.3 else None for _ in range(170)]
    previous, current = sketch_of(DataType.INTEGER, before), sketch_of(DataType.INTEGER, after)
    found = drift.compare(previous, current, psi_threshold=0.2)
    present = [v for v in before if v is not None]
    edges = sorted({quantile(present, r / 10) for r in range(1, 10)})
    expected = plain_psi(plain_shares(before, edges), plain_shares(after, edges))
    assert found["psi"] == pytest.approx(expected, abs=1e-6) and found["drifted"] and expected > 0.2
    assert found["ks"] == pytest.approx(plain_ks(present, [v for v in after if v is not None]), abs=1e-6)
    assert found["bins"] == len(edges) + 2


def test_the_same_values_reshuffled_do_not_drift():
    rng = random.Random(6)
    values = [rng.randint(0, 4) for _ in range(5000)]
    shuffled = values[:]
    rng.shuffle(shuffled)
    found = drift.compare(sketch_of(DataType.INTEGER, values), sketch_of(DataType.INTEGER, shuffled),
                          psi_threshold=0.2)
    assert found["psi"] == pytest.approx(0, abs=1e-3) and found["ks"] < RANK_ERROR and not found["drifted"]


def test_category_psi_over_top_values_and_other():
    before = ["Credit"] * 50 + ["Debit"] * 30 + ["Prepaid"] * 20
    after = ["Credit"] * 20 + ["Debit"] * 30 + ["Prepaid"] * 10 + ["Voucher"] * 30 + [None] * 10
    found = drift.compare(sketch_of(DataType.STRING, before), sketch_of(DataType.STRING, after), psi_threshold=0.2)
    expected = plain_psi([0, 0.5, 0.3, 0.2, 0], [0.1, 0.2, 0.3, 0.1, 0.3])  # null, the 3 top values, other
    assert found["psi"] == pytest.approx(expected, abs=1e-6) and found["drifted"] and found["ks"] is None


def test_psi_threshold_and_ks_threshold():
    same = sketch_of(DataType.INTEGER, list(range(100)))
    moved = sketch_of(DataType.INTEGER, list(range(5, 105)))
    small = drift.compare(same, moved, psi_threshold=0.2)
    assert small["psi"] < 0.2 and not small["drifted"]
    assert drift.compare(same, moved, psi_threshold=0.2, ks_threshold=0.01)["drifted"]
    assert drift.compare(same, moved, psi_threshold=small["psi"] / 2)["drifted"]


def test_values_turning_null_drift():
    before, after = list(range(100)), list(range(50)) + [None] * 50
    found = drift.compare(sketch_of(DataType.INTEGER, before), sketch_of(DataType.INTEGER, after), psi_threshold=0.2)
    edges = [quantile(before, r / 10) for r in range(1, 10)]
    assert found["psi"] == pytest.approx(plain_psi(plain_shares(before, edges), plain_shares(after, edges)), abs=1e-6)
    assert found["drifted"]


def test_an_unreadable_value_stops_the_sketch_not_the_run():
    import fakeredis

    from feature_store.services.statistics import StatisticsSettings, latest_statistics, record_run

    broken, fine = FeatureSketch(DataType.INTEGER), FeatureSketch(DataType.INTEGER)
    broken.update([(1, b"3"), (2, b'"three"')])
    fine.update([(1, b"3")])
    assert broken.error is not None and fine.error is None
    client = fakeredis.FakeRedis()
    recorded = record_run(client, {"broken": broken, "fine": fine}, settings=StatisticsSettings(), job_id="j",
                          computed_at="2026-01-01T00:00:00")
    assert list(recorded["statistics"]) == ["fine"] and latest_statistics(client, "broken") is None


def test_a_sum_beyond_64_bits_survives_serialization():
    moments = [datetime(2024, 3, 1) + timedelta(seconds=i) for i in range(20_000)]  # microseconds sum > 2**63
    sketch = sketch_of(DataType.DATETIME, moments, size=10_000)
    assert sketch.total > 2**63
    again = FeatureSketch.from_state(orjson.loads(orjson.dumps(sketch.state())))
    assert again.total == sketch.total and again.summary() == sketch.summary()


def test_integer_sums_are_exact_whatever_the_chunk():
    rng = random.Random(7)
    values = [rng.randint(-2**62, 2**62) for _ in range(30_000)]
    sketch = sketch_of(DataType.INTEGER, values, size=10_000)
    assert sketch.total == sum(values) and sketch.summary()["mean"] == sum(values) / len(values)


def test_a_defect_recording_one_feature_costs_only_its_statistics():
    import fakeredis

    from feature_store.services.statistics import StatisticsSettings, latest_statistics, record_run

    failing, fine = FeatureSketch(DataType.INTEGER), FeatureSketch(DataType.INTEGER)
    failing.update([(1, b"3")])
    fine.update([(1, b"4")])
    failing.summary = lambda: 1 / 0
    client = fakeredis.FakeRedis()
    recorded = record_run(client, {"failing": failing, "fine": fine}, settings=StatisticsSettings(), job_id="j",
                          computed_at="2026-01-01T00:00:00")
    assert list(recorded["statistics"]) == ["fine"] and latest_statistics(client, "failing") is None
    assert latest_statistics(client, "fine")["max"] == 4
