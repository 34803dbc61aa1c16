"""A warehouse with a history, for point-in-time (as-of) values, and the values at any instant
computed independently from its rows (plain Python over the tuples, not the project's code).

Cases: rows created after an instant (leakage), a payment created before its policy, a user
created after its payment, a quote bound after an instant, timestamps in several text forms
(a `T`, fractions of any length, a `Z`), and statuses as stored.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from tests import scenario

USERS = [
    (10, "ten@example.com", "2024-01-01 00:00:00"),
    (11, "late@example.com", "2024-03-01T12:00:00.5"),      # created after its first payment
    (12, "zulu@example.com", "2024-01-01 00:00:00Z"),
]
QUOTES = [
    (100, 10, 1000, "2024-01-05 10:00:00", "2024-01-06 10:00:00.250000"),
    (101, 10, 1000, "2024-01-07 00:00:00", None),
    (110, 11, 1000, "2024-03-02 00:00:00", "2024-03-02T00:00:01.75"),
    (120, 12, 1000, "2024-01-02T00:00:00Z", "2024-01-02 00:01:00Z"),
]
POLICIES = [
    (1000, 10, 100, "active", "2024-01-06 10:00:00.250000"),
    (1001, 10, 101, "active", "2024-02-01 00:00:00"),
    (1100, 11, 110, "active", "2024-03-02 00:00:02"),
    (1200, 12, 120, "cancelled", "2024-01-02 00:01:00"),
]
PAYMENTS = [
    (5000, 1000, 500, "Credit", "failed", "2024-01-06 11:00:00"),
    (5001, 1000, 500, "Debit", "succeeded", "2024-01-10 00:00:00.000001"),
    (5002, 1000, 500, "Credit", "failed", "2024-01-20T00:00:00"),
    (5003, 1001, 500, "Prepaid", "succeeded", "2024-01-08 00:00:00"),   # before its policy
    (5004, 1001, 500, "Debit", "failed", "2024-02-15 00:00:00.5"),
    (5100, 1100, 500, "Credit", "succeeded", "2024-03-01 00:00:00"),    # before its user and policy
    (5101, 1100, 500, "Debit", "failed", "2024-03-03 00:00:00Z"),
    (5200, 1200, 500, "Credit", "refunded", "2024-01-03 00:00:00"),
    (5201, 1200, 500, "Debit", "succeeded", "2024-01-02T23:59:59.999999"),
]
TABLE_ROWS = {"users": USERS, "quotes": QUOTES, "policies": POLICIES, "payment_transactions": PAYMENTS}


def load(url: str) -> None:
    scenario.load_rows(url, TABLE_ROWS)


def ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=None)


def instants() -> list[datetime]:
    """Every moment at which a row appears or an event happens, a microsecond before and after
    each, and instants before and after everything."""
    moments = {ts(row[-1]) for row in USERS + POLICIES + PAYMENTS} | {ts(q[3]) for q in QUOTES} \
        | {ts(q[4]) for q in QUOTES if q[4]}
    around = {m + timedelta(microseconds=d) for m in moments for d in (-1, 0, 1)}
    return sorted(around | {datetime(2000, 1, 1), datetime(2099, 1, 1)})


def values_at(moment: datetime) -> dict[str, dict[str, object]]:
    """{feature_type: {entity_id: JSON-ready value}} of the entities that exist at `moment`."""
    users = {u[0] for u in USERS if ts(u[2]) <= moment}
    policies = {p[0]: p[1] for p in POLICIES if ts(p[4]) <= moment}
    purchase: dict[int, datetime | None] = {u: None for u in users}
    failed: dict[int, int] = {u: 0 for u in users}
    for _, policy_id, _, _, status, created in PAYMENTS:
        if ts(created) > moment or policy_id not in policies or policies[policy_id] not in users:
            continue
        user = policies[policy_id]
        if status == "succeeded" and (purchase[user] is None or ts(created) < purchase[user]):
            purchase[user] = ts(created)
        elif status == "failed":
            failed[user] += 1
    binding = {}
    for quote_id, _, _, created, bound in QUOTES:
        if ts(created) <= moment:
            known = bound is not None and ts(bound) <= moment
            binding[str(quote_id)] = math.trunc((ts(bound) - ts(created)).total_seconds()) if known else None
    return {
        "user_policy_time_of_purchase": {str(u): (None if t is None else t.isoformat()) for u, t in purchase.items()},
        "quote_creation_to_binding_time": binding,
        "user_failed_transaction_count": {str(u): n for u, n in failed.items()},
        "payment_type": {str(p[0]): p[3] for p in PAYMENTS if ts(p[5]) <= moment},
    }


def entities() -> dict[str, list[str]]:
    """Every entity id of each feature type (existing at some time)."""
    latest = values_at(datetime(9999, 1, 1))
    return {feature_type: list(values) for feature_type, values in latest.items()}
