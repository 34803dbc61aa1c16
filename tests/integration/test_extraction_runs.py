"""Extraction runs on real Redis with real `rq worker` processes: waiting, joining, following a
job, failures, and the store matching the warehouse afterwards."""

from __future__ import annotations

import threading

import pytest
import redis

from feature_store import create_app
from feature_store.services.jobs import CURRENT_RUN_KEY
from tests import scenario
from tests.conftest import wait_for

BASE = "/api/v1/features"
EXPECTED = scenario.expected_values()
TOTAL = sum(len(v) for v in EXPECTED.values())


def concurrent_extracts(client, count: int = 8) -> list[str]:
    """The job ids answered to `count` simultaneous POST /extract?wait=false."""
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(client.post(f"{BASE}/extract?wait=false")
                                                           .get_json()["job_id"])) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


@pytest.fixture
def make_client(redis_url):
    apps = []

    def make(warehouse_url, **settings):
        app = create_app({"REDIS_URL": redis_url, "WAREHOUSE_URL": warehouse_url, **settings})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["feature_store"].close()


def test_a_second_request_joins_the_run_in_progress(make_client, scenario_sqlite, start_worker):
    client = make_client(scenario_sqlite)
    first = client.post(f"{BASE}/extract?wait=false").get_json()  # no worker yet: stays queued
    assert first["status"] == "queued" and first["joined"] is False
    ids = concurrent_extracts(client)
    assert set(ids) == {first["job_id"]}

    start_worker(scenario_sqlite)
    joined = client.post(f"{BASE}/extract")  # waits for the same run
    assert joined.status_code == 200
    assert joined.get_json()["job_id"] == first["job_id"] and joined.get_json()["joined"] is True
    assert joined.get_json()["total_features"] == TOTAL
    # Once it is over, the next request starts a new run.
    again = client.post(f"{BASE}/extract").get_json()
    assert again["job_id"] != first["job_id"] and again["joined"] is False


def test_concurrent_first_requests_start_one_run(make_client, scenario_sqlite, redis_server):
    client = make_client(scenario_sqlite)
    ids = concurrent_extracts(client)
    assert len(set(ids)) == 1
    assert redis_server.client().llen("rq:queue:feature-extraction") == 1


def test_a_followed_job_reports_started_then_finished_and_is_kept_a_day(make_client, scenario_sqlite, start_worker,
                                                                         redis_server):
    client = make_client(scenario_sqlite)
    job_id = client.post(f"{BASE}/extract?wait=false").get_json()["job_id"]
    start_worker(scenario_sqlite)
    status = wait_for(lambda: (s := client.get(f"{BASE}/extract/{job_id}").get_json())["status"] == "finished"
                      and s, what="the job to finish")
    assert status["result"]["features_extracted"] == {ft: len(v) for ft, v in EXPECTED.items()}
    assert status["started_at"] and status["ended_at"] >= status["started_at"]
    assert redis_server.client().ttl(f"rq:job:{job_id}") > 86_400


def test_a_failed_run_reports_its_error_and_keeps_the_previous_values(make_client, scenario_sqlite, start_worker,
                                                                      redis_server, tmp_path):
    client = make_client(scenario_sqlite)
    worker = start_worker(scenario_sqlite)
    assert client.post(f"{BASE}/extract").status_code == 200
    redis = redis_server.client()
    before = {k: redis.hgetall(k) for k in redis.keys("payment_type:*")}
    worker.stop()
    start_worker(f"sqlite:///{tmp_path / 'missing.db'}")  # a worker whose warehouse is gone
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 500
    body = response.get_json()
    assert body["success"] is False and "warehouse" in body["error"] and body["job_id"]
    status = client.get(f"{BASE}/extract/{body['job_id']}").get_json()
    assert status["status"] == "failed" and "warehouse" in status["error"]
    # The warehouse did not answer at all: every feature failed, and is named.
    assert set(body["failed_features"]) == set(EXPECTED) and body["features_extracted"] == {}
    assert all(feature_type in body["error"] for feature_type in EXPECTED)
    assert {k: redis.hgetall(k) for k in redis.keys("payment_type:*")} == before
    assert not (tmp_path / "missing.db").exists()  # a missing SQLite file is not created empty
    assert redis.get(CURRENT_RUN_KEY) is None  # a run that is over no longer holds the slot


def test_extraction_removes_gone_entities_on_postgresql(make_client, start_worker, redis_server, warehouse_url):
    client = make_client(warehouse_url)
    start_worker(warehouse_url)
    assert client.post(f"{BASE}/extract").status_code == 200
    scenario.execute(warehouse_url, "DELETE FROM payment_transactions WHERE id = :id", id=scenario.HUGE)
    body = client.post(f"{BASE}/extract").get_json()
    assert body["features_extracted"]["payment_type"] == len(EXPECTED["payment_type"]) - 1
    redis = redis_server.client()
    assert not redis.exists(f"payment_type:{scenario.HUGE}")
    assert redis.exists("payment_type:2000")
    # The user's purchase time now comes from nothing: null, and still stored.
    assert redis.hget(f"user_policy_time_of_purchase:{scenario.BIG}", "value") == b"null"


def test_a_run_that_could_not_be_enqueued_does_not_block_the_next(make_client, scenario_sqlite, start_worker,
                                                                  monkeypatch):
    client = make_client(scenario_sqlite)
    runs = client.application.extensions["feature_store"].runs
    real_enqueue = runs.queue.enqueue_job

    def flaky(job, *args, **kwargs):
        raise redis.TimeoutError("Redis did not answer")

    monkeypatch.setattr(runs.queue, "enqueue_job", flaky)
    assert client.post(f"{BASE}/extract").status_code == 503
    monkeypatch.setattr(runs.queue, "enqueue_job", real_enqueue)
    start_worker(scenario_sqlite)
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 200 and response.get_json()["joined"] is False


def test_a_value_computed_on_demand_goes_with_its_entity_at_the_next_run(make_client, start_worker, redis_server,
                                                                         warehouse_url):
    client = make_client(warehouse_url)
    start_worker(warehouse_url)
    assert client.post(f"{BASE}/extract").status_code == 200
    scenario.execute(warehouse_url, "INSERT INTO payment_transactions (id, policy_id, amount_cents, payment_type, "
                     "status, created_at) VALUES (77, 200, 5, 'Prepaid', 'failed', '2024-05-01 00:00:00')")
    answer = client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": "77"}).get_json()
    assert answer["feature_value"] == "Prepaid"  # not in the last run: computed on demand, and stored
    redis = redis_server.client()
    assert redis.exists("payment_type:77")
    scenario.execute(warehouse_url, "DELETE FROM payment_transactions WHERE id = 77")
    body = client.post(f"{BASE}/extract").get_json()
    status = client.get(f"{BASE}/extract/{body['job_id']}").get_json()
    assert status["result"]["removed"]["payment_type"] == 1
    assert not redis.exists("payment_type:77")
    assert client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": "77"}).status_code == 404
