"""Freshness: how old each feature's values may be, and how old they are.

A feature's max age is declared with it (`Feature.max_age`); a deployment overrides it with
FEATURE_MAX_AGE="feature_type=seconds,..." (0 means no limit). Serving recomputes a cached value
older than its max age (services/serving.py). Each extraction run records, per feature it
refreshed, when and by which run (OnlineStore.note_refreshed); discovery reports it beside the
max age, so an operator sees at once which features have stopped being refreshed.
"""

from __future__ import annotations

from feature_store.online_store import format_computed_at, now_seconds
from feature_store.registry import Registry

MAX_AGE_LIMIT = 100 * 366 * 86_400  # a century: beyond, say 0 (no limit)


def max_ages(registry: Registry, overrides: str | None = None) -> dict[str, int | None]:
    """{feature_type: max age in whole seconds, or None for no limit}: the declarations, with the
    FEATURE_MAX_AGE overrides applied.

    Raises:
        ValueError: an override names an unknown feature or is not a whole number of seconds
            (a misspelt override must fail the start, not be ignored).
    """
    ages = {f.feature_type: (int(f.max_age.total_seconds()) if f.max_age is not None else None) for f in registry}
    seen: set[str] = set()
    for part in (overrides or "").split(","):
        if not part.strip():
            continue
        feature_type, sep, seconds = part.partition("=")
        feature_type, seconds = feature_type.strip(), seconds.strip()
        if not sep or feature_type not in ages:
            raise ValueError(f"FEATURE_MAX_AGE: {part.strip()!r} is not feature_type=seconds of a declared "
                             f"feature (declared: {', '.join(ages)})")
        if feature_type in seen:
            raise ValueError(f"FEATURE_MAX_AGE: {feature_type} is given twice")
        seen.add(feature_type)
        if not (seconds.isascii() and seconds.isdigit()) or int(seconds) > MAX_AGE_LIMIT:
            raise ValueError(f"FEATURE_MAX_AGE: the max age of {feature_type} must be a whole number of "
                             f"seconds up to {MAX_AGE_LIMIT} (0: no limit), not {seconds!r}")
        ages[feature_type] = int(seconds) or None
    return ages


def describe(max_age: int | None, refreshed: dict | None, now: int | None = None) -> dict:
    """A feature's freshness as discovery reports it.

    Args:
        max_age: seconds, or None.
        refreshed: {"computed_at": epoch seconds, "job_id": ...} of the last run that refreshed
            the feature, or None when none is recorded.
    """
    now = now_seconds() if now is None else now
    if refreshed is None:
        return {"max_age_seconds": max_age, "last_refreshed_at": None, "last_run_id": None, "age_seconds": None,
                "fresh": None}
    age = max(0, now - refreshed["computed_at"])
    return {"max_age_seconds": max_age, "last_refreshed_at": format_computed_at(refreshed["computed_at"]),
            "last_run_id": refreshed["job_id"], "age_seconds": age,
            "fresh": True if max_age is None else age <= max_age}
