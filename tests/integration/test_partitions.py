"""Partitioned extraction runs (EXTRACT_PARTITIONS > 1): workers share a run's id ranges under
the one job id the API reports, and the store ends up matching the warehouse exactly."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import create_engine, text

from feature_store import create_app
from feature_store.warehouse import demo
from tests.conftest import wait_for
from tests.integration.test_faults import assert_store_matches_warehouse
from workers.jobs import extract_partition

BASE = "/api/v1/features"


@pytest.fixture
def warehouse(tmp_path):
    url = f"sqlite:///{tmp_path / 'partitioned.db'}"
    demo.generate(url, users=5_000, seed=9)
    return url


@pytest.fixture
def client(redis_url, warehouse):
    app = create_app({"REDIS_URL": redis_url, "WAREHOUSE_URL": warehouse})
    yield app.test_client()
    app.extensions["feature_store"].close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_partitioned_run_matches_the_warehouse(client, warehouse, start_worker, redis_server, workers):
    for _ in range(workers):
        start_worker(warehouse, env={"EXTRACT_PARTITIONS": "3", "EXTRACT_CHUNK_SIZE": "500"})
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    status = client.get(f"{BASE}/extract/{body['job_id']}").get_json()
    assert status["status"] == "finished" and status["result"]["partitions"] == 3
    assert_store_matches_warehouse(redis_server.client(), warehouse)

    engine = create_engine(warehouse)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM payment_transactions WHERE id % 5 = 0"))
        conn.execute(text("UPDATE quotes SET bound_at = NULL WHERE id % 4 = 0"))
    engine.dispose()
    again = client.post(f"{BASE}/extract").get_json()
    assert again["job_id"] != body["job_id"]
    assert client.get(f"{BASE}/extract/{again['job_id']}").get_json()["result"]["removed"]["payment_type"] > 0
    assert_store_matches_warehouse(redis_server.client(), warehouse)


def test_a_partitioned_run_whose_warehouse_is_gone_fails_with_its_reason(client, tmp_path, start_worker):
    start_worker(f"sqlite:///{tmp_path / 'gone.db'}", env={"EXTRACT_PARTITIONS": "2"})
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 500
    assert "warehouse" in response.get_json()["error"]


def test_a_partition_job_of_a_run_that_is_over_writes_nothing(warehouse, start_worker, redis_server):
    # E.g. a partition put back after its worker died, picked up once its run had failed: writing
    # then could race the next run (and would write older values over newer ones).
    connection = redis_server.client()
    queue = Queue("feature-extraction", connection=connection, serializer="json")
    ranges = {table: [0, 2**62] for table in ("users", "quotes", "payment_transactions")}
    job = queue.enqueue_call(extract_partition, kwargs={"run_id": "extract-long-gone", "index": 0,
                                                         "ranges": ranges, "computed_at": 1})
    start_worker(warehouse)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=30, what="the partition job")
    assert job.return_value() == {"skipped": True}
    assert [key for key in connection.scan_iter() if not key.startswith(b"rq:")] == []


def test_a_run_failing_in_its_own_partition_leaves_no_partition_to_write_later(client, warehouse, start_worker,
                                                                                redis_server):
    # An unreadable timestamp in the last quote: the partition holding it fails. The run's job
    # (the only worker) runs every partition itself; the partition jobs it queued must then find
    # the run over and write nothing, however late they run.
    engine = create_engine(warehouse)
    with engine.begin() as conn:
        conn.execute(text("UPDATE quotes SET bound_at = 'not a time' WHERE id = (SELECT MAX(id) FROM quotes)"))
    engine.dispose()
    start_worker(warehouse, env={"EXTRACT_PARTITIONS": "2"})
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 500
    assert "quote_creation_to_binding_time" in response.get_json()["error"]
    connection = redis_server.client()
    run_id = response.get_json()["job_id"]
    for index in range(2):
        part = Job.fetch(f"{run_id}-p{index}", connection=connection, serializer="json")
        wait_for(lambda part=part: part.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED),
                 timeout=30, what="the partition job")
        assert part.return_value() == {"skipped": True}
