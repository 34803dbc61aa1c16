"""The parity check: do the values the store serves equal what the as-of path computes for the
moment each was computed? A sample of stored values per feature, each recomputed as of its own
computed_at through the same declaration (one as-of statement per feature for the whole sample).

A disagreement is a real finding: a change the warehouse records without an event time (a
payment's status updated in place: the stored value saw the old status, the as-of path reads the
new one), a row deleted since, or logic that changed without a new version.

A stored value was computed from the warehouse as it was a little after its computed_at (whole
seconds, and a run's start: its queries come later). So a value agrees when it equals the as-of
value at its computed_at or at computed_at + `window` seconds: rows created within that window
cannot be told from the value's own read.
"""

from __future__ import annotations

import random
from datetime import timedelta

from feature_store.online_store import EPOCH, OnlineStore, format_computed_at, now_seconds
from feature_store.registry import Registry

SHOWN = 20  # disagreements listed per feature


def check(registry: Registry, store: OnlineStore, warehouse, *, sample: int, feature_types: list[str] | None = None,
          seed: int | None = None, window: int = 60) -> dict:
    """Sample up to `sample` stored values of each feature and compare each with its value as of
    its computed_at.

    Returns:
        {"sample_per_feature", "checked_at", "features": {feature_type: {"checked", "agree",
         "disagree", "agreement", "disagreements": [{"entity_id", "computed_at", "stored",
         "as_of_value"}]}}}
    """
    rng = random.Random(seed)
    report: dict = {"sample_per_feature": sample, "window_seconds": window,
                    "checked_at": format_computed_at(now_seconds()), "features": {}}
    for feature in registry:
        if feature_types is not None and feature.feature_type not in feature_types:
            continue
        ids = store.stored_ids(feature.feature_type)
        chosen = rng.sample(ids, min(sample, len(ids)))
        stored = store.read([(feature.feature_type, str(i)) for i in chosen])
        pairs = [(entity_id, hit) for entity_id, hit in zip(chosen, stored, strict=True) if hit is not None]
        items = [(pos, entity_id, EPOCH + timedelta(seconds=hit[1])) for pos, (entity_id, hit) in enumerate(pairs)]
        recomputed = warehouse.batch_as_of(feature, items)
        later = warehouse.batch_as_of(feature, [(pos, eid, at + timedelta(seconds=window)) for pos, eid, at in items])
        disagreements = []
        for pos, (entity_id, (value, computed_at)) in enumerate(pairs):
            again = recomputed.get(pos)
            if again != value and later.get(pos) != value:
                disagreements.append({"entity_id": str(entity_id), "computed_at": format_computed_at(computed_at),
                                      "stored": value.decode(), "as_of_value": again.decode() if again else None})
        checked = len(pairs)
        report["features"][feature.feature_type] = {
            "checked": checked, "agree": checked - len(disagreements), "disagree": len(disagreements),
            "agreement": round((checked - len(disagreements)) / checked, 4) if checked else None,
            "disagreements": disagreements[:SHOWN]}
    return report
