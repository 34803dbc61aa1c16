"""Faults injected into a running store (RELIABILITY.md has the longer chaos and soak runs):
Redis stops and returns, a worker is SIGKILLed mid-extraction, the warehouse fails mid-query,
and readers keep reading while a full refresh runs."""

from __future__ import annotations

import random
import signal
import threading
import time

import orjson
import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text

from feature_store.features import REGISTRY
from feature_store.warehouse import Warehouse, demo
from tests.conftest import start_redis_server, wait_for

BASE = "/api/v1/features"


def store_snapshot(client: redis_lib.Redis) -> dict[bytes, dict]:
    """Every feature value in Redis (RQ's and the run slot's keys aside)."""
    keys = [k for k in client.scan_iter(count=5000) if not k.startswith((b"rq:", b"feature-store:"))]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        return dict(zip(keys, pipe.execute(), strict=True))


def warehouse_truth(url: str) -> dict[bytes, bytes]:
    """Every value the warehouse implies now, computed afresh: {key: value JSON}."""
    warehouse = Warehouse(url)
    try:
        return {f"{f.feature_type}:{eid}".encode(): value for f in REGISTRY
                for chunk in warehouse.stream(f, chunk_size=10_000) for eid, value in chunk}
    finally:
        warehouse.dispose()


def assert_store_matches_warehouse(client, url):
    stored = {k: v[b"value"] for k, v in store_snapshot(client).items()}
    truth = warehouse_truth(url)
    assert stored.keys() == truth.keys()
    assert stored == truth


class Readers:
    """Threads reading existing entities through the API while something else happens; every
    answer must be 200 with a value seen in `allowed` (the previous run's or the new run's)."""

    def __init__(self, app, keys: list[tuple[str, str]], allowed: dict[tuple[str, str], set], threads: int = 3):
        self.app, self.keys, self.allowed = app, keys, allowed
        self.stop_event = threading.Event()
        self.reads = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        client = self.app.test_client()
        rng = random.Random()
        while not self.stop_event.is_set():
            feature_type, entity_id = rng.choice(self.keys)
            response = client.post(f"{BASE}/inference", json={"feature_type": feature_type, "entity_id": entity_id})
            self.reads += 1
            if response.status_code != 200:
                self.failures.append(f"{feature_type}:{entity_id} -> {response.status_code} {response.get_data()}")
            elif orjson.dumps(response.get_json()["feature_value"]) not in self.allowed[(feature_type, entity_id)]:
                self.failures.append(f"{feature_type}:{entity_id} -> unexpected {response.get_json()}")

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(10)


def test_redis_stops_and_returns_the_service_recovers_without_a_restart(scenario_sqlite, make_app):
    server = start_redis_server()
    port = server.port
    app = make_app(REDIS_URL=server.url, WAREHOUSE_URL=scenario_sqlite)
    client = app.test_client()

    def infer():
        return client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": "3010"})

    try:
        assert infer().get_json()["feature_value"] == "Prepaid"
        server.process.terminate()
        server.process.wait(10)
        for _ in range(5):
            started = time.monotonic()
            response = infer()
            assert response.status_code == 503 and response.get_json()["success"] is False
            assert time.monotonic() - started < 2.0
        server = start_redis_server(port)  # same address, empty (no persistence)
        back = time.monotonic()
        response = wait_for(lambda: (r := infer()).status_code == 200 and r, timeout=2.0, what="recovery")
        assert response.get_json()["feature_value"] == "Prepaid"  # recomputed: never a wrong value
        assert time.monotonic() - back < 2.0
    finally:
        server.stop()


@pytest.fixture
def big_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'big.db'}"
    demo.generate(url, users=40_000, seed=3)
    return url


def sample_keys(url: str, count: int = 300) -> list[tuple[str, str]]:
    truth = warehouse_truth(url)
    keys = [tuple(k.decode().split(":", 1)) for k in truth]
    return random.Random(1).sample(keys, count)


def test_readers_never_miss_a_value_during_a_full_refresh(redis_url, redis_server, big_sqlite, start_worker,
                                                         make_app):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=big_sqlite)
    client = app.test_client()
    start_worker(big_sqlite, env={"EXTRACT_CHUNK_SIZE": "1000"})
    assert client.post(f"{BASE}/extract").status_code == 200
    before = warehouse_truth(big_sqlite)
    engine = create_engine(big_sqlite)
    with engine.begin() as conn:  # the next run changes many values
        conn.execute(text("UPDATE payment_transactions SET status = 'failed' WHERE id % 3 = 0"))
        conn.execute(text("UPDATE payment_transactions SET payment_type = 'Debit' WHERE id % 5 = 0"))
    engine.dispose()
    after = warehouse_truth(big_sqlite)
    keys = sample_keys(big_sqlite)
    allowed = {key: {before[f"{key[0]}:{key[1]}".encode()], after[f"{key[0]}:{key[1]}".encode()]} for key in keys}
    with Readers(app, keys, allowed) as readers:
        assert client.post(f"{BASE}/extract").status_code == 200
    assert readers.reads > 100 and readers.failures == []
    assert_store_matches_warehouse(redis_server.client(), big_sqlite)


def test_a_worker_killed_mid_extraction_is_detected_and_its_run_retried(redis_url, redis_server, big_sqlite,
                                                                        start_worker, make_app):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=big_sqlite)
    client = app.test_client()
    fast = ["--job-monitoring-interval", "1", "--maintenance-interval", "2"]
    env = {"EXTRACT_CHUNK_SIZE": "500"}
    doomed = start_worker(big_sqlite, *fast, env=env)
    assert client.post(f"{BASE}/extract").status_code == 200
    before = warehouse_truth(big_sqlite)
    engine = create_engine(big_sqlite)
    with engine.begin() as conn:
        conn.execute(text("UPDATE payment_transactions SET payment_type = 'Prepaid' WHERE id % 2 = 0"))
        conn.execute(text("DELETE FROM payment_transactions WHERE id % 7 = 0"))
    engine.dispose()
    after = warehouse_truth(big_sqlite)
    keys = [k for k in sample_keys(big_sqlite) if f"{k[0]}:{k[1]}".encode() in before]
    allowed = {key: {before[f"{key[0]}:{key[1]}".encode()], after[f"{key[0]}:{key[1]}".encode()]} for key in keys}
    redis = redis_server.client()

    with Readers(app, keys, allowed) as readers:
        job_id = client.post(f"{BASE}/extract?wait=false").get_json()["job_id"]
        meta = wait_for(lambda: client.get(f"{BASE}/extract/{job_id}").get_json()["status"] == "started"
                        and b"write" in (redis.hget(f"rq:job:{job_id}", "meta") or b""),
                        timeout=60, interval=0.01, what="the run's write phase")
        assert meta
        doomed.kill(signal.SIGKILL)  # the worker and its work horse, mid-write
        killed_at = time.monotonic()
        assert client.get(f"{BASE}/extract/{job_id}").get_json()["status"] == "started"
        # A second request joins the abandoned run rather than starting a competing one.
        assert client.post(f"{BASE}/extract?wait=false").get_json()["job_id"] == job_id
        start_worker(big_sqlite, *fast, env=env)
        status = wait_for(lambda: (s := client.get(f"{BASE}/extract/{job_id}").get_json())["status"] == "finished"
                          and s, timeout=150, interval=0.5, what="the abandoned run to be retried and finish")
        detected_after = time.monotonic() - killed_at
    assert readers.reads > 100 and readers.failures == []
    assert status["result"]["removed"]["payment_type"] > 0
    assert_store_matches_warehouse(redis, big_sqlite)
    print(f"abandoned run retried and finished {detected_after:.1f}s after the kill")


def test_a_warehouse_query_killed_mid_stream_fails_its_feature_and_leaves_its_values_untouched(
        redis_url, redis_server, postgres_server_url, start_worker, make_app):
    demo.generate(postgres_server_url, users=60_000, seed=5, replace=True)
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=postgres_server_url)
    client = app.test_client()
    start_worker(postgres_server_url, env={"EXTRACT_CHUNK_SIZE": "500"})
    assert client.post(f"{BASE}/extract").status_code == 200
    redis = redis_server.client()
    before = store_snapshot(redis)

    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    job_id = client.post(f"{BASE}/extract?wait=false").get_json()["job_id"]
    terminated = 0
    deadline = time.monotonic() + 30
    with admin.connect() as conn:
        while not terminated and time.monotonic() < deadline:
            terminated = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'feature-store' AND state = 'active' AND pid <> pg_backend_pid() "
                # A feature's rows being fetched (its server-side cursor): not the run's other
                # queries (its read position, its plan), whose loss fails every feature.
                "AND query ILIKE 'fetch%'"
            )).scalar()
            time.sleep(0.005)
    admin.dispose()
    assert terminated, "the extraction's query was never caught running"
    status = wait_for(lambda: (s := client.get(f"{BASE}/extract/{job_id}").get_json())["status"] == "failed" and s,
                      timeout=60, what="the run to fail")
    assert "warehouse" in status["error"] and "Traceback" not in status["error"]
    failed = set(status["failed_features"])
    assert len(failed) == 1, status["failed_features"]
    assert set(status["features_extracted"]) == {f.feature_type for f in REGISTRY} - failed
    after = store_snapshot(redis)
    assert after.keys() == before.keys()
    for key, stored in after.items():
        if key.split(b":")[0].decode() in failed:
            assert stored == before[key]  # the killed feature: exactly as before
        else:  # the others: refreshed by this run (the same values, a later computed_at)
            assert stored[b"value"] == before[key][b"value"]
            assert int(stored[b"computed_at"]) > int(before[key][b"computed_at"])
    engine = create_engine(postgres_server_url)
    demo.drop_schema(engine)
    engine.dispose()


def test_a_partitioned_run_whose_worker_is_killed_mid_partition_is_retried_and_completes(
        redis_url, redis_server, big_sqlite, start_worker, make_app):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=big_sqlite)
    client = app.test_client()
    fast = ["--job-monitoring-interval", "1", "--maintenance-interval", "2"]
    env = {"EXTRACT_CHUNK_SIZE": "500", "EXTRACT_PARTITIONS": "2"}
    doomed = start_worker(big_sqlite, *fast, env=env)
    assert client.post(f"{BASE}/extract").status_code == 200
    engine = create_engine(big_sqlite)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM payment_transactions WHERE id % 7 = 0"))
        conn.execute(text("UPDATE quotes SET bound_at = NULL WHERE id % 4 = 0"))
    engine.dispose()
    redis = redis_server.client()

    # The only worker takes the run's job, which queues both partitions and runs the first itself;
    # it dies while writing that partition (its id lists are the first thing the write phase stores).
    job_id = client.post(f"{BASE}/extract?wait=false").get_json()["job_id"]
    wait_for(lambda: redis.keys("feature-store:ids:*:run:*:0"), timeout=60, interval=0.005,
             what="the first partition's write phase")
    doomed.kill(signal.SIGKILL)
    assert client.get(f"{BASE}/extract/{job_id}").get_json()["status"] == "started"
    # A new worker finds the second partition queued and runs it; the first stays claimed by the
    # dead run's job until RQ sees it abandoned and retries it, and the retried job runs its own
    # partition again, then removes the values of gone entities for the whole run.
    start_worker(big_sqlite, *fast, env=env)
    status = wait_for(lambda: (s := client.get(f"{BASE}/extract/{job_id}").get_json())["status"] == "finished"
                      and s, timeout=150, interval=0.5, what="the abandoned run to be retried and finish")
    assert status["result"]["partitions"] == 2
    assert status["result"]["removed"]["payment_type"] > 0
    assert_store_matches_warehouse(redis, big_sqlite)
    assert redis.keys("feature-store:ids:*:run:*") == []  # every part's id list folded into the record
