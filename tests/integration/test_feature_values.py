"""Every feature's value for every scenario entity, on SQLite and PostgreSQL warehouses, through
real Redis: by batch extraction in a real `rq worker` process, and computed on demand. The
expected values are computed independently from the inserted rows (tests/scenario.py)."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from sqlalchemy import Float, Numeric, cast

from feature_store import create_app
from feature_store.features import PAYMENT_TRANSACTION, REGISTRY
from feature_store.registry import DataType, Feature
from feature_store.warehouse import Warehouse
from feature_store.warehouse.models import PaymentTransaction
from tests import scenario

BASE = "/api/v1/features"
EXPECTED = scenario.expected_values()


@pytest.fixture
def real_app(redis_url, warehouse_url):
    app = create_app({"REDIS_URL": redis_url, "WAREHOUSE_URL": warehouse_url})
    yield app
    app.extensions["feature_store"].close()


def test_a_worker_extracts_every_value_exactly(real_app, redis_server, warehouse_url, start_worker):
    start_worker(warehouse_url)
    response = real_app.test_client().post(f"{BASE}/extract")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["features_extracted"] == {ft: len(v) for ft, v in EXPECTED.items()}
    redis = redis_server.client()
    for feature_type, values in EXPECTED.items():
        for entity_id, value in values.items():
            stored = redis.hgetall(f"{feature_type}:{entity_id}")
            assert orjson.loads(stored[b"value"]) == value, (feature_type, entity_id)
            assert int(stored[b"computed_at"]) > 0
    # Nothing else of ours was written: one key per (feature, entity), RQ's own keys aside.
    ours = [k for k in redis.keys("*") if not k.startswith(b"rq:") and not k.startswith(b"feature-store:")]
    assert len(ours) == sum(len(v) for v in EXPECTED.values())


def test_values_computed_on_demand_are_exact(real_app, redis_server):
    client = real_app.test_client()
    items = [{"feature_type": ft, "entity_id": eid} for ft, values in EXPECTED.items() for eid in values]
    body = client.post(f"{BASE}/training", json={"features": items}).get_json()
    assert body["total_successful"] == len(items)
    for item, result in zip(items, body["results"], strict=True):
        assert result["feature_value"] == EXPECTED[item["feature_type"]][item["entity_id"]], item
    for feature_type, entity_id in [("payment_type", "1"), ("user_policy_time_of_purchase", "5")]:
        response = client.post(f"{BASE}/inference", json={"feature_type": feature_type, "entity_id": entity_id})
        assert response.status_code == 404


def test_batch_and_on_demand_share_one_definition_and_agree(warehouse_url):
    warehouse = Warehouse(warehouse_url)
    try:
        for feature in REGISTRY:
            streamed = {eid: value for chunk in warehouse.stream(feature, chunk_size=2) for eid, value in chunk}
            assert warehouse.compute(feature, streamed) == streamed
            assert {str(k): orjson.loads(v) for k, v in streamed.items()} == EXPECTED[feature.feature_type]
    finally:
        warehouse.dispose()


def _feature(feature_type, data_type, query):
    return Feature(feature_type=feature_type, name=feature_type, description="", entity=PAYMENT_TRANSACTION,
                   data_type=data_type, created_at=datetime(2025, 1, 1), query=query)


# Queries the four contract features don't exercise: a list IN (expanded by SQLAlchemy at
# execution), a timestamp parameter, numeric and float results (psycopg's processors depend on the
# column's type code).
EXTRA_FEATURES = [
    _feature("status_in", DataType.INTEGER, lambda q: q.select(PaymentTransaction, PaymentTransaction.amount_cents)
             .where(PaymentTransaction.status.in_(["failed", "refunded"]))),
    _feature("after_march", DataType.DATETIME, lambda q: q.select(PaymentTransaction, PaymentTransaction.created_at)
             .where(PaymentTransaction.created_at > datetime(2024, 3, 1))),
    _feature("amount_numeric", DataType.FLOAT, lambda q: q.select(
        PaymentTransaction, cast(PaymentTransaction.amount_cents, Numeric(12, 2)) / 100)),
    _feature("amount_float", DataType.FLOAT, lambda q: q.select(
        PaymentTransaction, cast(PaymentTransaction.amount_cents, Float) / 3)),
]


@pytest.mark.parametrize("feature", EXTRA_FEATURES, ids=lambda f: f.feature_type)
def test_batch_reads_agree_with_on_demand_for_other_kinds_of_query(warehouse_url, feature):
    warehouse = Warehouse(warehouse_url)
    try:
        streamed = {eid: value for chunk in warehouse.stream(feature, chunk_size=2) for eid, value in chunk}
        assert streamed  # the scenario has rows for each
        assert warehouse.compute(feature, [p[0] for p in scenario.PAYMENTS]) == streamed
    finally:
        warehouse.dispose()
