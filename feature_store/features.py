"""The feature declarations: the single source of truth for what each feature is and how it is
computed. Discovery, batch extraction, on-demand and as-of computation all read these and nothing
else.

A query is written once against a scope `q` (warehouse/statements.py): `q.select(Model, *inputs)`
starts from the entity's table, `q.on(Model, condition)` is the condition of every join, and
`q.key(Model)` is what to group by. The scope makes the same query read the warehouse as it is
now (every entity, or some ids) or as it was at each row's instant of a training spine.

To add a feature: declare it here (one `REGISTRY.register(Feature(...))`), then give it rows and
expected values in tests/scenario.py (the contract and integration tests cover every declared
feature). See the README, "Adding a feature".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func

from feature_store.registry import DataType, Entity, Feature, FeatureSet, Registry
from feature_store.warehouse.models import PaymentTransaction, Policy, Quote, User, earliest

USER = Entity("user_id", "users")
QUOTE = Entity("quote_id", "quotes")
PAYMENT_TRANSACTION = Entity("payment_transaction_id", "payment_transactions")

CATALOG_DATE = datetime(2025, 1, 1)
# How old a served value may be before it is recomputed on read (FEATURE_MAX_AGE overrides): a
# day for what changes with every payment or binding, a week for a payment's type, set once.
DAY = timedelta(days=1)


def _whole_seconds(start: datetime, end: datetime | None) -> int | None:
    """Whole seconds from start to end, truncated toward zero; None while end is unknown.

    Integer arithmetic on the timedelta: exact for any span, unlike float seconds, and the same on
    every dialect (SQLite has no interval type; its timestamps are text).
    """
    if end is None:
        return None
    micros = (end - start) // timedelta(microseconds=1)
    seconds = abs(micros) // 1_000_000
    return seconds if micros >= 0 else -seconds


REGISTRY = Registry()

REGISTRY.register(Feature(
    feature_type="user_policy_time_of_purchase",
    name="User Policy Time of Purchase",
    description="For a given user_id, returns the policy payment transaction time: the earliest "
    "succeeded payment transaction across the user's policies (null when there is none)",
    entity=USER,
    data_type=DataType.DATETIME,
    created_at=CATALOG_DATE,
    max_age=DAY,
    query=lambda q: (
        q.select(User, earliest(PaymentTransaction.created_at))
        .outerjoin(Policy, q.on(Policy, Policy.user_id == User.id))
        .outerjoin(PaymentTransaction, q.on(PaymentTransaction, and_(
            PaymentTransaction.policy_id == Policy.id,
            PaymentTransaction.status == "succeeded",
        )))
        .group_by(q.key(User))
    ),
))

REGISTRY.register(Feature(
    feature_type="quote_creation_to_binding_time",
    name="Time from Quote Creation to Binding",
    description="For a given quote_id, returns the whole seconds from the quote's creation to its "
    "binding, truncated toward zero (null while the quote is not bound)",
    entity=QUOTE,
    data_type=DataType.INTEGER,
    created_at=CATALOG_DATE,
    max_age=DAY,
    query=lambda q: q.select(Quote, Quote.created_at, Quote.bound_at),
    value=_whole_seconds,
))

REGISTRY.register(Feature(
    feature_type="user_failed_transaction_count",
    name="Count of User Failed Transactions",
    description="For a given user_id, returns the number of failed payment transactions across "
    "the user's policies (0 when there is none)",
    entity=USER,
    data_type=DataType.INTEGER,
    created_at=CATALOG_DATE,
    max_age=DAY,
    query=lambda q: (
        q.select(User, func.count(PaymentTransaction.id))
        .outerjoin(Policy, q.on(Policy, Policy.user_id == User.id))
        .outerjoin(PaymentTransaction, q.on(PaymentTransaction, and_(
            PaymentTransaction.policy_id == Policy.id,
            PaymentTransaction.status == "failed",
        )))
        .group_by(q.key(User))
    ),
))

REGISTRY.register(Feature(
    feature_type="payment_type",
    name="Type of Payment",
    description="For a given payment_transaction_id, returns the payment type "
    "(Credit, Debit or Prepaid) as stored",
    entity=PAYMENT_TRANSACTION,
    data_type=DataType.STRING,
    created_at=CATALOG_DATE,
    max_age=7 * DAY,
    query=lambda q: q.select(PaymentTransaction, PaymentTransaction.payment_type),
))

# Feature sets: what a model version reads, pinned by name (a new version gets a new name).
REGISTRY.register_set(FeatureSet(
    name="underwriting_v1",
    feature_types=("user_policy_time_of_purchase", "user_failed_transaction_count"),
    description="Every user feature, as the underwriting model v1 was trained on them",
    created_at=datetime(2026, 12, 1),
))
