"""A small warehouse with every case the features must get right, and the expected values
computed independently from its rows (plain Python over the tuples, not the project's code)."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import create_engine, text

from feature_store.warehouse.demo import create_schema, drop_schema

BIG = 2**53 + 1  # beyond a double's exact integers
HUGE = 2**63 - 1  # the largest BIGINT

USERS = [
    (1, "no-quotes@example.com", "2024-01-01 00:00:00"),
    (2, "only-failed@example.com", "2024-01-02 00:00:00"),
    (3, "several-policies@example.com", "2024-01-03 00:00:00"),
    (4, "pending-refunded@example.com", "2024-01-04 00:00:00"),
    (7, "seven@example.com", "2024-01-07 00:00:00"),
    (BIG, "big@example.com", "2024-01-08 00:00:00"),
    (8, "mixed-formats@example.com", "2024-01-09T00:00:00"),
]
QUOTES = [
    # id, user_id, premium_cents, created_at, bound_at
    (20, 2, 1000, "2024-02-01 10:00:00", "2024-02-01 11:00:00"),
    (30, 3, 1000, "2024-02-01 10:00:00", "2024-02-03 10:00:00"),
    (31, 3, 1000, "2024-02-05 10:00:00", "2024-02-06 10:00:00.500000"),
    (40, 4, 1000, "2024-02-01 10:00:00", "2024-02-01 10:00:00"),          # bound at creation
    (41, 4, 1000, "2024-02-01 10:00:00", None),                           # never bound
    (42, 4, 1000, "2024-03-01 08:00:00.750000", "2024-03-01 08:00:02.250000"),  # 1.5 s -> 1
    (43, 4, 1000, "2024-03-01 08:00:00.250000", "2024-03-01 08:00:01"),   # 0.75 s -> 0
    (70, 7, 1000, "2024-03-01 00:00:00", "2024-04-15 12:34:56.999999"),   # days, truncated
    (2**62, BIG, 1000, "2024-03-01 00:00:00", "2024-03-01 00:01:40"),
    # Timestamps as other writers leave them in SQLite: a T separator, a short fraction, a Z.
    (80, 8, 1000, "2024-03-01T08:00:00.5", "2024-03-01 08:00:03Z"),  # 2.5 s -> 2
    (81, 8, 1000, "2024-03-02 08:00:00", "2024-03-02T08:00:00.999"),  # 0.999 s -> 0
]
POLICIES = [
    # id, user_id, quote_id, status, created_at
    (200, 2, 20, "active", "2024-02-01 11:00:00"),
    (300, 3, 30, "cancelled", "2024-02-03 10:00:00"),
    (301, 3, 31, "active", "2024-02-06 10:00:00"),
    (400, 4, 40, "active", "2024-02-01 10:00:00"),
    (700, 7, 70, "expired", "2024-04-15 12:34:56"),
    (BIG, BIG, 2**62, "active", "2024-03-01 00:01:40"),
    (800, 8, 80, "active", "2024-03-01 08:00:03"),
]
PAYMENTS = [
    # id, policy_id, amount_cents, payment_type, status, created_at
    (2000, 200, 500, "Credit", "failed", "2024-02-02 00:00:00"),
    (2001, 200, 500, "Debit", "failed", "2024-02-03 00:00:00"),
    # user 3: the first policy's success is later than the later policy's.
    (3000, 300, 500, "Credit", "failed", "2024-02-04 00:00:00"),
    (3001, 300, 500, "Credit", "succeeded", "2024-06-01 10:00:00"),
    (3010, 301, 500, "Prepaid", "succeeded", "2024-05-01 09:00:00.250000"),
    (3011, 301, 500, "Debit", "succeeded", "2024-05-20 09:00:00"),
    (3012, 301, 500, "Debit", "failed", "2024-05-21 09:00:00"),
    (3013, 301, 500, "Credit", "refunded", "2024-04-01 00:00:00"),  # earlier, but not succeeded
    (4000, 400, 500, "Credit", "pending", "2024-02-02 00:00:00"),
    (4001, 400, 500, "Debit", "refunded", "2024-02-03 00:00:00"),
    (7000, 700, 500, "Prepaid", "succeeded", "2024-04-16 00:00:00"),
    (HUGE, BIG, 500, "Debit", "succeeded", "2024-03-02 00:00:00.000001"),
    # "T" sorts after " " as text: the earliest is the T-separated one, an hour before.
    (8000, 800, 500, "Credit", "succeeded", "2024-05-01 09:00:00"),
    (8001, 800, 500, "Debit", "succeeded", "2024-05-01T08:00:00"),
    (8002, 800, 500, "Debit", "succeeded", "2024-05-01T08:30:00.1Z"),
]

TABLE_ROWS = {"users": USERS, "quotes": QUOTES, "policies": POLICIES, "payment_transactions": PAYMENTS}

# Ids that name no row: not numbers, not written as the row's id is, or out of range.
NON_IDS = ["abc", "1:2", "*", "user_policy_time_of_purchase:1", "1 OR 1=1", "007", "7.0", " 7", "7 ", "+7",
           "-0", "", "٣", "9" * 40, "?", "[1]", "1\n", "\x00", "é" * 5]


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=None)


def expected_values() -> dict[str, dict[str, object]]:
    """{feature_type: {entity_id: JSON-ready value}} for every entity of the scenario."""
    policy_user = {p[0]: p[1] for p in POLICIES}
    purchase: dict[int, datetime | None] = {u[0]: None for u in USERS}
    failed: dict[int, int] = {u[0]: 0 for u in USERS}
    for _, policy_id, _, _, status, created in PAYMENTS:
        user = policy_user[policy_id]
        if status == "succeeded":
            moment = _ts(created)
            if purchase[user] is None or moment < purchase[user]:
                purchase[user] = moment
        elif status == "failed":
            failed[user] += 1
    binding = {}
    for quote_id, _, _, created, bound in QUOTES:
        binding[quote_id] = None if bound is None else math.trunc((_ts(bound) - _ts(created)).total_seconds())
    return {
        "user_policy_time_of_purchase": {str(u): (None if t is None else t.isoformat()) for u, t in purchase.items()},
        "quote_creation_to_binding_time": {str(q): s for q, s in binding.items()},
        "user_failed_transaction_count": {str(u): n for u, n in failed.items()},
        "payment_type": {str(p[0]): p[3] for p in PAYMENTS},
    }


def load_scenario(url: str) -> None:
    """(Re)create the warehouse tables at `url` and insert the scenario's rows."""
    load_rows(url, TABLE_ROWS)


def load_rows(url: str, table_rows: dict[str, list[tuple]]) -> None:
    """(Re)create the warehouse tables at `url` and insert `table_rows` ({table: rows})."""
    engine = create_engine(url)
    try:
        drop_schema(engine)
        create_schema(engine)
        with engine.begin() as conn:
            for table, rows in table_rows.items():
                width = len(rows[0])
                names = ", ".join(f":c{i}" for i in range(width))
                conn.execute(text(f"INSERT INTO {table} VALUES ({names})"),
                             [{f"c{i}": v for i, v in enumerate(row)} for row in rows])
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params) -> None:
    """Change the warehouse behind the service's back (as the real one changes while serving)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()
