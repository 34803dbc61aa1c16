"""One feature's failure does not stop the others (CONTRACT.md, "Beyond the seed"): with real rq
workers on SQLite and PostgreSQL, a feature whose query fails (a missing table, an unreadable
row, an error part-way through its stream) keeps its previous values, served and none removed;
the other features are refreshed fully; the run ends failed and names the feature and why."""

from __future__ import annotations

import pytest

from tests import scenario

BASE = "/api/v1/features"
EXPECTED = scenario.expected_values()
QUOTE_FEATURE = "quote_creation_to_binding_time"


def values_of(redis, feature_type: str) -> dict[bytes, dict]:
    keys = sorted(redis.keys(f"{feature_type}:*"))
    return {key: redis.hgetall(key) for key in keys}


def dialect(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


@pytest.fixture
def deployment(warehouse_url, redis_url, redis_server, make_app, start_worker):
    """An app and a worker on the scenario warehouse, after one successful run."""

    def start(**worker_env):
        client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=warehouse_url).test_client()
        start_worker(warehouse_url, env={k: str(v) for k, v in worker_env.items()})
        first = client.post(f"{BASE}/extract")
        assert first.status_code == 200, first.get_json()["error"]
        return client, redis_server.client()

    return start


def assert_only_failed(client, response, failed: str, reason_mentions: str, expected_counts: dict) -> dict:
    """The run answered 500 and GET /extract/<job_id> shows it failed: exactly `failed` named,
    with a reason mentioning `reason_mentions`, and the others' counts."""
    assert response.status_code == 500
    body = response.get_json()
    assert body["success"] is False and body["job_id"]
    assert list(body["failed_features"]) == [failed]
    assert reason_mentions in body["failed_features"][failed]
    assert failed in body["error"] and "Traceback" not in body["error"]
    assert body["features_extracted"] == expected_counts
    assert body["total_features"] == sum(expected_counts.values())
    status = client.get(f"{BASE}/extract/{body['job_id']}").get_json()
    assert status["status"] == "failed" and status["success"] is False
    assert status["failed_features"] == body["failed_features"] and status["error"] == body["error"]
    assert status["features_extracted"] == expected_counts and status["ended_at"]
    return body


def counts(**changes) -> dict:
    return {ft: changes.get(ft, len(values)) for ft, values in EXPECTED.items() if ft not in changes
            or changes[ft] is not None}


@pytest.mark.parametrize("partitions", [1, 2])
def test_a_missing_table_fails_its_feature_and_the_others_are_refreshed_fully(deployment, warehouse_url,
                                                                              partitions):
    client, redis = deployment(EXTRACT_PARTITIONS=partitions, EXTRACT_CHUNK_SIZE=3)
    quotes_before = values_of(redis, QUOTE_FEATURE)
    # A gone payment (another feature's entity) and a failed payment more for user 2.
    scenario.execute(warehouse_url, "DELETE FROM payment_transactions WHERE id = 2001")
    scenario.execute(warehouse_url, "UPDATE payment_transactions SET status = 'failed' WHERE id = 3011")
    cascade = " CASCADE" if dialect(warehouse_url) == "postgresql" else ""
    scenario.execute(warehouse_url, f"DROP TABLE quotes{cascade}")

    response = client.post(f"{BASE}/extract")
    assert_only_failed(client, response, QUOTE_FEATURE, "quotes",
                       counts(**{QUOTE_FEATURE: None, "payment_type": len(EXPECTED["payment_type"]) - 1}))
    # The failed feature: every value kept (none removed) and still served.
    assert values_of(redis, QUOTE_FEATURE) == quotes_before
    answer = client.post(f"{BASE}/inference", json={"feature_type": QUOTE_FEATURE, "entity_id": 42}).get_json()
    assert answer["feature_value"] == 1
    # The others: refreshed, and the gone entity's value removed.
    assert not redis.exists("payment_type:2001")
    assert redis.hget("user_failed_transaction_count:3", "value") == b"3"
    assert redis.hget("user_failed_transaction_count:2", "value") == b"1"


def test_an_unreadable_row_fails_its_feature_only(deployment, warehouse_url):
    client, redis = deployment()
    before = values_of(redis, QUOTE_FEATURE)
    if dialect(warehouse_url) == "sqlite":
        bad, mentions = "'not a time'", "cannot be read"
    else:  # a timestamp PostgreSQL keeps but Python cannot hold: psycopg refuses the row
        bad, mentions = "'12000-01-01 00:00:00'", QUOTE_FEATURE
    scenario.execute(warehouse_url, f"UPDATE quotes SET bound_at = {bad} WHERE id = 81")
    scenario.execute(warehouse_url, "DELETE FROM payment_transactions WHERE id = 2001")
    response = client.post(f"{BASE}/extract")
    assert_only_failed(client, response, QUOTE_FEATURE, mentions,
                       counts(**{QUOTE_FEATURE: None, "payment_type": len(EXPECTED["payment_type"]) - 1}))
    assert values_of(redis, QUOTE_FEATURE) == before
    assert not redis.exists("payment_type:2001")


def test_a_query_that_breaks_part_way_through_its_stream_fails_its_feature_only(deployment, warehouse_url):
    # payment_transactions becomes a view whose payment_type raises an error at the last row, so
    # the query streams (chunks of 2 rows) and breaks off near its end, in the database.
    client, redis = deployment(EXTRACT_CHUNK_SIZE=2)
    before = values_of(redis, "payment_type")
    last = max(p[0] for p in scenario.PAYMENTS if p[0] != scenario.HUGE)
    if dialect(warehouse_url) == "sqlite":
        failing = f"CASE WHEN id = {last} THEN json_extract('not json ' || id, '$') ELSE payment_type END"
    else:
        failing = f"CASE WHEN id = {last} THEN (1 / (id - {last}))::text ELSE payment_type END"
    scenario.execute(warehouse_url, "ALTER TABLE payment_transactions RENAME TO payments_stored")
    scenario.execute(warehouse_url, "CREATE VIEW payment_transactions AS SELECT id, policy_id, amount_cents, "
                     f"{failing} AS payment_type, status, created_at FROM payments_stored")
    try:
        scenario.execute(warehouse_url, "DELETE FROM users WHERE id = 1")  # a gone user
        response = client.post(f"{BASE}/extract")
        users = len(EXPECTED["user_failed_transaction_count"]) - 1
        assert_only_failed(client, response, "payment_type", "payment_type",
                           counts(payment_type=None, user_failed_transaction_count=users,
                                  user_policy_time_of_purchase=users))
        assert values_of(redis, "payment_type") == before
        assert not redis.exists("user_failed_transaction_count:1")
        assert not redis.exists("user_policy_time_of_purchase:1")
    finally:
        scenario.execute(warehouse_url, "DROP VIEW payment_transactions")
        scenario.execute(warehouse_url, "ALTER TABLE payments_stored RENAME TO payment_transactions")


def test_the_next_run_after_the_table_is_back_refreshes_the_feature(deployment, warehouse_url):
    client, redis = deployment()
    scenario.execute(warehouse_url, "ALTER TABLE quotes RENAME TO quotes_away")
    assert client.post(f"{BASE}/extract").status_code == 500
    scenario.execute(warehouse_url, "ALTER TABLE quotes_away RENAME TO quotes")
    scenario.execute(warehouse_url, "DELETE FROM quotes WHERE id = 41")
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 200
    assert response.get_json()["features_extracted"][QUOTE_FEATURE] == len(EXPECTED[QUOTE_FEATURE]) - 1
    assert not redis.exists(f"{QUOTE_FEATURE}:41")
