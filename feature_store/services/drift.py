"""Drift of a feature's values between two extraction runs, from the two runs' sketches.

PSI (population stability index) compares how the values fall into the same bins in both runs:
    PSI = sum over bins of (current - previous) * ln(current / previous)
with each run's share of values per bin (a bin's share is floored at PSI_FLOOR so that an empty
bin counts as very different, not as infinite). Rules of thumb: below 0.1 stable, 0.1-0.25 a
moderate shift, above 0.25 a large one; DRIFT_PSI_THRESHOLD (0.2) is where a run flags it.

The bins are the previous run's: for numbers and datetimes its deciles (ties merged: a feature
that is mostly 0 has few bins), each run's share from its own KLL sketch's CDF; for strings and
booleans the previous run's top values plus "other". Nulls are a bin of their own in both, so
a feature whose values turn null drifts too.

KS (Kolmogorov-Smirnov statistic, numbers and datetimes only): the largest gap between the two
runs' CDFs of the non-null values, evaluated at every item either KLL sketch retains (exact
while the sketches hold every value; within their rank error, about 1.65% each, beyond).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import datasketches as ds

from feature_store.services.sketches import QUANTILE_RANKS, TOP_VALUES, FeatureSketch

PSI_FLOOR = 1e-4
_DECILES = tuple(rank for rank in QUANTILE_RANKS if round(rank * 10, 6).is_integer())


def psi(previous: Sequence[float], current: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """The population stability index of two distributions over the same bins (shares summing
    to 1 each; a share under `floor` counts as `floor`)."""
    total = 0.0
    for before, now in zip(previous, current, strict=True):
        before, now = max(before, floor), max(now, floor)
        total += (now - before) * math.log(now / before)
    return total


def numeric_edges(previous: FeatureSketch) -> list[float]:
    """The bins' upper edges: the previous run's deciles, in its sketch's scale, ties merged."""
    if previous.present == 0:
        return []
    return sorted(set(previous.kll.get_quantiles(list(_DECILES), True)))


def numeric_shares(sketch: FeatureSketch, edges: list[float]) -> list[float]:
    """The sketch's share of values in each bin: null, then (-inf, e1], (e1, e2], ..., (ek, inf)."""
    if sketch.count == 0:
        return [0.0] * (len(edges) + 2)
    present = sketch.present / sketch.count
    if sketch.present == 0:
        masses = [0.0] * (len(edges) + 1)
    elif edges:
        masses = sketch.kll.get_pmf(edges, True)
    else:
        masses = [1.0]
    return [sketch.nulls / sketch.count] + [mass * present for mass in masses]


def category_bins(previous: FeatureSketch) -> list[str]:
    """The previous run's top values (the bins besides "other" and null)."""
    return [item for item, *_ in sorted(previous.frequent.get_frequent_items(
        ds.frequent_items_error_type.NO_FALSE_POSITIVES), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]]


def category_shares(sketch: FeatureSketch, bins: list[str]) -> list[float]:
    """The sketch's share of values: null, each of `bins`, then every other value."""
    if sketch.count == 0:
        return [0.0] * (len(bins) + 2)
    counts = [sketch.frequent.get_estimate(item) for item in bins]
    other = max(0, sketch.present - sum(counts))
    return [sketch.nulls / sketch.count] + [n / sketch.count for n in counts] + [other / sketch.count]


def ks_statistic(previous: FeatureSketch, current: FeatureSketch) -> float | None:
    """The largest gap between the two runs' CDFs of non-null values; None without values."""
    if not previous.numeric or previous.present == 0 or current.present == 0:
        return None
    points = sorted({item for item, _ in previous.kll} | {item for item, _ in current.kll})
    before = previous.kll.get_cdf(points, True)
    now = current.kll.get_cdf(points, True)
    return max(abs(a - b) for a, b in zip(before[:-1], now[:-1], strict=True))


def compare(previous: FeatureSketch, current: FeatureSketch, *, psi_threshold: float,
            ks_threshold: float | None = None) -> dict:
    """The drift of `current` against `previous` (sketches of one feature, two runs).

    Returns:
        {"psi", "ks" (None for strings, or without values), "bins" (how many PSI compared),
         "drifted": PSI above `psi_threshold`, or KS above `ks_threshold` when one is set,
         "psi_threshold", "ks_threshold"}
    """
    if current.numeric:
        edges = numeric_edges(previous)
        value = psi(numeric_shares(previous, edges), numeric_shares(current, edges))
        bins = len(edges) + 2
    else:
        names = category_bins(previous)
        value = psi(category_shares(previous, names), category_shares(current, names))
        bins = len(names) + 2
    ks = ks_statistic(previous, current)
    drifted = value > psi_threshold or (ks_threshold is not None and ks is not None and ks > ks_threshold)
    return {"psi": round(value, 6), "ks": None if ks is None else round(ks, 6), "bins": bins,
            "drifted": drifted, "psi_threshold": psi_threshold, "ks_threshold": ks_threshold}

