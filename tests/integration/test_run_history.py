"""Extraction runs as operations see them, on real Redis with real rq workers: runs of some
features joining or queued behind the run in progress, the run history (GET /extract), no
silent waits when no worker listens, and scheduled runs (at most one run per due time)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from rq.job import Job, JobStatus
from sqlalchemy import create_engine, text

from feature_store.features import REGISTRY
from feature_store.services.schedule import Schedule, Scheduler
from tests import scenario
from tests.conftest import PROJECT_DIR, wait_for

BASE = "/api/v1/features"
ALL = REGISTRY.feature_types()
COUNT, PAYMENT, QUOTE = "user_failed_transaction_count", "payment_type", "quote_creation_to_binding_time"


@pytest.fixture
def pg_warehouse(postgres_server_url) -> str:
    scenario.load_scenario(postgres_server_url)
    return postgres_server_url


@contextmanager
def users_locked(url: str):
    """Hold an exclusive lock on `users`: a run that reads it stays started until the block ends."""
    engine = create_engine(url)
    conn = engine.connect()
    transaction = conn.begin()
    conn.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
    try:
        yield
    finally:
        transaction.rollback()
        conn.close()
        engine.dispose()


def post(client, feature_types=None, wait=False):
    body = {"feature_types": feature_types} if feature_types is not None else None
    response = client.post(f"{BASE}/extract?wait={'true' if wait else 'false'}", json=body)
    assert response.status_code in (200, 202), response.get_json()
    return response.get_json()


def status(client, job_id: str) -> dict:
    return client.get(f"{BASE}/extract/{job_id}").get_json()


def finished(client, job_id: str, timeout: float = 30) -> dict:
    return wait_for(lambda: (s := status(client, job_id))["status"] in ("finished", "failed") and s,
                    timeout=timeout, what=f"run {job_id} to end")


def test_runs_of_some_features_join_the_run_that_covers_them_or_queue_behind_it(
        make_app, redis_url, pg_warehouse, start_worker):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=pg_warehouse).test_client()
    start_worker(pg_warehouse)
    with users_locked(pg_warehouse):
        first = post(client, [COUNT])
        wait_for(lambda: status(client, first["job_id"])["status"] == "started", what="the first run to start")
        # The run in progress covers this: joined.
        assert post(client, [COUNT])["job_id"] == first["job_id"]
        # It started without these: a run queued behind it, which later requests join and grow.
        second = post(client, [PAYMENT])
        assert second["joined"] is False and second["job_id"] != first["job_id"]
        assert status(client, second["job_id"])["status"] == "queued"
        third = post(client, [QUOTE])
        assert third["joined"] is True and third["job_id"] == second["job_id"]
        assert status(client, second["job_id"])["feature_types"] == sorted([PAYMENT, QUOTE])
        runs = client.get(f"{BASE}/extract").get_json()["runs"]
        assert [run["job_id"] for run in runs] == [second["job_id"], first["job_id"]]
        assert [run["status"] for run in runs] == ["queued", "started"]
        assert "features_extracted" not in runs[0]  # not ended yet
    first_status = finished(client, first["job_id"])
    second_status = finished(client, second["job_id"])
    assert first_status["status"] == second_status["status"] == "finished"
    assert first_status["result"]["features_extracted"] == {COUNT: len(scenario.USERS)}
    assert set(second_status["result"]["features_extracted"]) == {PAYMENT, QUOTE}
    assert second_status["started_at"] >= first_status["ended_at"]  # one run at a time
    runs = client.get(f"{BASE}/extract").get_json()["runs"]
    assert runs[0] == {"job_id": second["job_id"], "status": "finished", "trigger": "api",
                       "feature_types": sorted([PAYMENT, QUOTE]), "enqueued_at": runs[0]["enqueued_at"],
                       "started_at": second_status["started_at"], "ended_at": second_status["ended_at"],
                       "features_extracted": second_status["result"]["features_extracted"],
                       "total_features": second_status["result"]["total_features"], "failed_features": {}}
    # Nothing is in progress any more: the next request starts a new run.
    assert post(client, [PAYMENT], wait=True)["joined"] is False


def test_a_run_waiting_behind_another_holds_no_worker_and_takes_in_features_until_it_starts(
        make_app, redis_url, redis_server, pg_warehouse, start_worker):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=pg_warehouse).test_client()
    start_worker(pg_warehouse)
    start_worker(pg_warehouse)
    with users_locked(pg_warehouse):
        first = post(client, [COUNT])
        wait_for(lambda: status(client, first["job_id"])["status"] == "started", what="the first run to start")
        second = post(client, [PAYMENT])
        job = Job.fetch(second["job_id"], connection=redis_server.client(), serializer="json")
        # Not in RQ's queue while it waits: the idle second worker does not take it.
        assert job.get_status(refresh=True) == JobStatus.CREATED
        assert redis_server.client().llen("rq:queue:feature-extraction") == 0
        assert status(client, second["job_id"])["status"] == "queued"
        assert status(client, second["job_id"])["started_at"] is None
        full = post(client)  # every feature: grows the waiting run to all of them
        assert full["job_id"] == second["job_id"] and full["joined"] is True
    result = finished(client, second["job_id"])
    assert result["status"] == "finished" and set(result["result"]["features_extracted"]) == set(ALL)
    assert result["feature_types"] == ALL
    assert result["started_at"] >= finished(client, first["job_id"])["ended_at"]


def test_a_run_waiting_behind_a_run_whose_worker_died_runs_once_that_one_is_retried(
        make_app, redis_url, pg_warehouse, start_worker):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=pg_warehouse).test_client()
    fast = ["--job-monitoring-interval", "1", "--maintenance-interval", "2"]
    doomed = start_worker(pg_warehouse, *fast)
    with users_locked(pg_warehouse):
        first = post(client, [COUNT])
        wait_for(lambda: status(client, first["job_id"])["status"] == "started", what="the first run to start")
        second = post(client, [PAYMENT])
        doomed.kill(signal.SIGKILL)  # the worker and its work horse, mid-run
        start_worker(pg_warehouse, *fast)  # the only worker: it must not be held by the waiting run
    # The abandoned first run is retried and finishes; then the waiting run is promoted and runs.
    assert finished(client, first["job_id"], timeout=90)["status"] == "finished"
    second_status = finished(client, second["job_id"], timeout=30)
    assert second_status["status"] == "finished"
    assert set(second_status["result"]["features_extracted"]) == {PAYMENT}


def test_a_request_with_no_worker_listening_says_so_at_once(make_app, redis_url, scenario_sqlite, start_worker):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite, EXTRACT_WAIT_SECONDS=60).test_client()
    started = time.monotonic()
    response = client.post(f"{BASE}/extract")
    assert time.monotonic() - started < 60  # it did not wait out EXTRACT_WAIT_SECONDS
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and body["workers"] == 0
    assert "no worker listens" in body["warning"] and "feature-extraction" in body["warning"]
    assert client.get("/ready").get_json()["workers"] == 0
    start_worker(scenario_sqlite)  # the run stayed queued: a worker that comes runs it
    assert finished(client, body["job_id"])["status"] == "finished"
    assert client.get("/ready").get_json()["workers"] == 1


def test_a_wait_that_reaches_its_bound_answers_202(make_app, redis_url, pg_warehouse, start_worker):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=pg_warehouse, EXTRACT_WAIT_SECONDS=0.3).test_client()
    start_worker(pg_warehouse)
    with users_locked(pg_warehouse):
        response = client.post(f"{BASE}/extract")
        assert response.status_code == 202
        body = response.get_json()
        assert body["status"] in ("queued", "started") and body["workers"] == 1 and "warning" not in body
        assert client.get(body["status_url"]).get_json()["status"] in ("queued", "started")
    assert finished(client, body["job_id"])["status"] == "finished"


def test_a_due_time_starts_at_most_one_run_however_many_schedulers_fire_it(
        make_app, redis_url, scenario_sqlite, start_worker):
    app_a = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    app_b = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    client = app_a.test_client()
    start_worker(scenario_sqlite)
    schedule = Schedule.parse("60")
    a = Scheduler(app_a.extensions["feature_store"].runs, schedule, name="a")
    b = Scheduler(app_b.extensions["feature_store"].runs, schedule, name="b")
    due = schedule.next_due(time.time())
    job_id, joined = a.fire(due)
    assert joined is False
    assert finished(client, job_id)["status"] == "finished"
    # The run is over; the other scheduler fires the same due time late: no second run.
    assert b.fire(due) is None
    assert a.fire(due) is None
    runs = client.get(f"{BASE}/extract").get_json()["runs"]
    assert [(run["job_id"], run["trigger"]) for run in runs] == [(job_id, "schedule")]
    # The next due time is another run.
    later, _ = b.fire(schedule.next_due(due))
    assert later != job_id


def test_schedulers_firing_the_same_due_times_at_once_start_one_run_each(make_app, redis_url, scenario_sqlite):
    import threading

    apps = [make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite) for _ in range(4)]
    schedule = Schedule.parse("60")
    schedulers = [Scheduler(app.extensions["feature_store"].runs, schedule, name=str(i)) for i, app in enumerate(apps)]
    client = apps[0].test_client()
    runs = apps[0].extensions["feature_store"].runs
    for due in (60.0 * n for n in range(1, 6)):
        fired, barrier = [], threading.Barrier(len(schedulers))

        def fire(scheduler, due=due, fired=fired, barrier=barrier):
            barrier.wait()
            fired.append(scheduler.fire(due))

        threads = [threading.Thread(target=fire, args=(scheduler,)) for scheduler in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        started = [result for result in fired if result is not None]
        assert len(started) == 1 and started[0][1] is False  # one claimed it, and started a run
        runs.redis.delete("feature-store:extraction:current", "feature-store:extraction:next")  # no worker here
    assert len(client.get(f"{BASE}/extract").get_json()["runs"]) == 5


def test_a_scheduled_run_that_comes_due_while_a_run_is_queued_joins_it(make_app, redis_url, scenario_sqlite):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    client = app.test_client()
    queued = post(client)  # no worker: it stays queued
    scheduler = Scheduler(app.extensions["feature_store"].runs, Schedule.parse("60"))
    assert scheduler.fire(time.time()) == (queued["job_id"], True)
    runs = client.get(f"{BASE}/extract").get_json()["runs"]
    assert [(run["job_id"], run["trigger"]) for run in runs] == [(queued["job_id"], "api")]


def fired(log: str) -> list[tuple[str, str]]:
    """(due time, run id) of every due time a scheduler's log says it started or joined a run."""
    found = []
    for line in log.splitlines():
        if "due time " in line and (": started run " in line or ": joined run " in line):
            due, rest = line.split("due time ", 1)[1].split(": ", 1)
            found.append((due, rest.split(" run ", 1)[1].split(";")[0]))
    return found


def test_the_scheduler_process_starts_ordinary_runs_on_its_schedule(make_app, redis_url, scenario_sqlite,
                                                                     start_worker, tmp_path):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite).test_client()
    start_worker(scenario_sqlite)
    env = {**os.environ, "REDIS_URL": redis_url, "WAREHOUSE_URL": scenario_sqlite, "EXTRACT_SCHEDULE": "1",
           "PYTHONPATH": str(PROJECT_DIR)}
    logs = [open(tmp_path / f"scheduler-{i}.log", "w+") for i in range(2)]  # noqa: SIM115 - closed below
    schedulers = [subprocess.Popen([sys.executable, "-m", "workers.scheduler"], cwd=PROJECT_DIR, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True) for log in logs]

    def output() -> str:
        text = ""
        for log in logs:
            log.seek(0)
            text += log.read()
        return text

    try:
        def two_finished():
            done = [r for r in client.get(f"{BASE}/extract").get_json()["runs"] if r["status"] == "finished"]
            return done[:2] if len(done) >= 2 else None

        runs = wait_for(two_finished, timeout=30, what="two scheduled runs")
        assert all(run["trigger"] == "schedule" for run in runs)
        assert all(run["features_extracted"] == {ft: len(v) for ft, v in scenario.expected_values().items()}
                   for run in runs)
        # Both fire every due time; for each, one starts (or joins) the run, the other finds it claimed.
        wait_for(lambda: len(fired(output())) >= 2 and "claimed by another" in output(), timeout=15,
                 what="due times both schedulers fired")
    finally:
        for process in schedulers:
            os.killpg(process.pid, signal.SIGTERM)
        codes = [process.wait(10) for process in schedulers]
        text = output()
        for log in logs:
            log.close()
    started = fired(text)
    assert len({due for due, _ in started}) == len(started), text  # at most one run per due time
    assert codes == [0, 0], text
    assert text.count("extraction every 1 s") == 2
