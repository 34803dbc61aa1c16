"""Real-time updates: the real streaming process (`python -m workers.stream`) over a private
PostgreSQL cluster with wal_level = logical, and a real Redis. After any committed change the
stored values equal what a full extraction run stores."""

from __future__ import annotations

import re

import orjson
import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import start_redis_server, wait_for
from tests.streaming import StreamProcess, extract, extracted_values, stored_values

# Every kind of change of every table, each its own transaction.
CHANGES = [
    # users: a new one, one updated in a column no feature reads, one deleted
    "INSERT INTO users VALUES (9, 'new@example.com', '2024-06-01 00:00:00')",
    "UPDATE users SET email = 'changed@example.com' WHERE id = 3",
    "DELETE FROM users WHERE id = 1",
    # quotes: a new bound one, one bound now, one deleted
    "INSERT INTO quotes VALUES (90, 9, 1000, '2024-06-01 10:00:00', '2024-06-01 10:00:30.5')",
    "UPDATE quotes SET bound_at = '2024-02-02 10:00:00' WHERE id = 41",
    "DELETE FROM quotes WHERE id = 43",
    # policies: a new one, one given to another user (its payments move with it), one deleted
    "INSERT INTO policies VALUES (900, 9, 90, 'active', '2024-06-01 10:00:30')",
    "UPDATE policies SET user_id = 4 WHERE id = 301",
    "DELETE FROM payment_transactions WHERE id = 7000; DELETE FROM policies WHERE id = 700",
    # payments: a new failed one, one failing now, one moved to another policy, one deleted
    "INSERT INTO payment_transactions VALUES (9000, 900, 500, 'Debit', 'failed', '2024-06-02 00:00:00')",
    "UPDATE payment_transactions SET status = 'failed' WHERE id = 4000",
    "UPDATE payment_transactions SET policy_id = 400 WHERE id = 2000",
    "DELETE FROM payment_transactions WHERE id = 3000",
    "UPDATE payment_transactions SET payment_type = 'Prepaid' WHERE id = 8000",
]


@pytest.fixture
def scratch_url(redis_server) -> str:
    """Another database of the private Redis, for the reference extraction."""
    return redis_server.url.rsplit("/", 1)[0] + "/1"


@pytest.fixture
def streams():
    started: list[StreamProcess] = []

    def start(redis_url: str, warehouse_url: str, **env) -> StreamProcess:
        process = StreamProcess(redis_url, warehouse_url, **env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def commit(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        for statement in statements:
            with engine.begin() as conn:
                for part in statement.split("; "):
                    conn.execute(text(part))
    finally:
        engine.dispose()


def wait_equal(warehouse_url: str, redis_url: str, scratch_url: str, timeout: float = 30) -> dict[str, bytes]:
    """Wait until the stored values are what a full extraction of the warehouse stores now."""
    expected = extracted_values(warehouse_url, scratch_url)
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: stored_values(client) == expected, timeout=timeout, interval=0.1,
                 what="the streamed values to equal a full extraction's")
    finally:
        client.close()
    return expected


def test_every_kind_of_change_is_streamed(logical_database, redis_url, scratch_url, streams, make_app):
    extract(logical_database, redis_url)
    stream = streams(redis_url, logical_database)
    stream.wait_state("streaming")
    commit(logical_database, *CHANGES)
    expected = wait_equal(logical_database, redis_url, scratch_url)

    # Spot checks of what the changes mean (the reference is the extraction, computed independently
    # of the streaming path): the moved policy took a failed payment from user 3 to user 4, the moved
    # payment one from user 2 to user 4, and the deleted user's values are gone.
    assert expected["user_failed_transaction_count:4"] == b"3"
    assert expected["user_failed_transaction_count:3"] == b"0"
    assert expected["user_failed_transaction_count:2"] == b"1"
    assert "user_failed_transaction_count:1" not in expected
    assert expected["quote_creation_to_binding_time:90"] == b"30"
    assert "payment_type:3000" not in expected

    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=logical_database)
    answer = app.test_client().post("/api/v1/features/inference",
                                    json={"feature_type": "user_failed_transaction_count", "entity_id": 9})
    assert answer.status_code == 200 and answer.get_json()["feature_value"] == 1

    # A change made while the app serves is what it serves next (its local cache is invalidated).
    commit(logical_database, "UPDATE payment_transactions SET status = 'failed' WHERE id = 3010")
    wait_for(lambda: app.test_client().post("/api/v1/features/inference", json={
        "feature_type": "user_failed_transaction_count", "entity_id": 4}).get_json()["feature_value"] == 4,
        timeout=30, what="the streamed count to be served")
    assert "applied" in stream.output()


def test_slot_created_on_first_start_and_kept(logical_database, redis_url, scratch_url, streams):
    stream = streams(redis_url, logical_database, slot="named_slot")
    stream.wait_state("streaming")
    assert "created replication slot 'named_slot'" in stream.output()
    stream.stop()
    # Changes while no process runs wait in the slot; the next process picks them up.
    commit(logical_database, *CHANGES[:4])
    extract_expected = extracted_values(logical_database, scratch_url)
    client = redis.Redis.from_url(redis_url)
    assert stored_values(client) != extract_expected
    client.close()
    again = streams(redis_url, logical_database, slot="named_slot")
    again.wait_state("streaming")
    assert "created replication slot" not in again.output()
    # The streamed values are the affected ones only: compare those keys.
    wait_for(lambda: _values(redis_url, ["user_policy_time_of_purchase:9", "quote_creation_to_binding_time:90"])
             == [orjson.dumps(None), b"30"], timeout=30, what="the changes made while stopped")


def _values(redis_url: str, keys: list[str]) -> list[bytes | None]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [client.hget(name, "value") for name in keys]
    finally:
        client.close()


def _idles(stream: StreamProcess, reason: str) -> None:
    report = stream.wait_state("idle")
    assert reason in report["reason"]
    lines = [line for line in stream.output().splitlines() if "streaming idle" in line]
    assert len(lines) == 1 and reason in lines[0]
    assert stream.process.poll() is None  # still up: no restart loop


def test_idle_on_sqlite(scenario_sqlite, redis_url, streams):
    _idles(streams(redis_url, scenario_sqlite), "the warehouse is sqlite")


def test_idle_without_logical_wal_level(postgres_server_url, redis_url, streams):
    engine = create_engine(postgres_server_url)
    with engine.connect() as conn:
        wal_level = conn.execute(text("SHOW wal_level")).scalar()
    engine.dispose()
    if wal_level == "logical":
        pytest.skip("the shared PostgreSQL has wal_level = logical")
    _idles(streams(redis_url, postgres_server_url), "wal_level = replica")


def test_idle_without_replication_privilege(logical_postgres, logical_database, redis_url, streams):
    role = logical_database.rsplit("/", 1)[1] + "_reader"
    commit(logical_postgres.url(), f"CREATE ROLE {role} LOGIN")
    commit(logical_database, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    url = logical_database.replace("postgres@", f"{role}@")
    _idles(streams(redis_url, url), "may not use replication slots")


def test_idle_without_replica_identity_full(logical_database, redis_url, streams):
    commit(logical_database, "ALTER TABLE policies REPLICA IDENTITY DEFAULT")
    _idles(streams(redis_url, logical_database), "ALTER TABLE policies REPLICA IDENTITY FULL")


def test_sigkill_at_any_point_loses_nothing(logical_database, redis_url, scratch_url, streams):
    extract(logical_database, redis_url)
    first = streams(redis_url, logical_database)
    first.wait_state("streaming")  # the slot exists from here on
    first.stop()
    for round_, statement in enumerate(CHANGES):
        stream = streams(redis_url, logical_database, STREAM_BATCH_CHANGES=1)
        commit(logical_database, statement, f"UPDATE payment_transactions SET status = "
               f"'{'failed' if round_ % 2 else 'pending'}' WHERE id = 8001")
        # Killed at varying points of reading, applying and confirming the two transactions.
        wait_for(lambda stream=stream: "applied" in stream.output() or stream.process.poll() is not None,
                 timeout=30, what="a batch to be applied")
        stream.kill()
    streams(redis_url, logical_database).wait_state("streaming")
    wait_equal(logical_database, redis_url, scratch_url)


def test_redis_outage_loses_nothing(logical_database, scratch_url, streams):
    import signal

    server = start_redis_server()
    try:
        extract(logical_database, server.url)
        stream = streams(server.url, logical_database)
        stream.wait_state("streaming")
        server.process.send_signal(signal.SIGSTOP)  # Redis stops answering
        try:
            commit(logical_database, *CHANGES)
            wait_for(lambda: "streaming paused" in stream.output(), timeout=30, what="the outage to be noticed")
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_equal(logical_database, server.url, scratch_url)
        assert stream.process.poll() is None
    finally:
        server.stop()


def test_warehouse_restart_loses_nothing(logical_postgres, logical_database, redis_url, scratch_url, streams):
    extract(logical_database, redis_url)
    stream = streams(redis_url, logical_database)
    stream.wait_state("streaming")
    commit(logical_database, *CHANGES[:7])
    logical_postgres.restart()
    commit(logical_database, *CHANGES[7:])
    wait_equal(logical_database, redis_url, scratch_url)
    assert stream.process.poll() is None


def _cut_the_flushed_position(url: str) -> None:
    """Write a WAL record without a flush of its own (a 20 kB logical message, as a vacuum's or a
    page pruned by a read writes one) and wait until the WAL writer has flushed its whole pages only:
    the flushed position is then a page boundary inside that record (until the WAL writer's next
    round: wal_writer_delay, 10 s on the test cluster, or another commit)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            block = int(conn.execute(text("SHOW wal_block_size")).scalar_one())

            def cut() -> bool:
                flushed, inserted = conn.execute(text(
                    "SELECT pg_current_wal_flush_lsn() - '0/0', pg_current_wal_insert_lsn() - '0/0'")).one()
                return flushed < inserted and flushed % block == 0
            for attempt in range(3):  # (a flush past the whole record before it was seen cut: again)
                conn.execute(text("SELECT pg_logical_emit_message(false, 'test', repeat('x', 20000))"))
                try:
                    wait_for(cut, timeout=25, interval=0.02, what="the WAL writer to flush whole pages only")
                    return
                except AssertionError:
                    if attempt == 2:
                        raise
    finally:
        engine.dispose()


def _first_read_seconds(stream: StreamProcess) -> float:
    """How long the process's first batch took to read (its log line: `(read 0.012s of which ...`)."""
    return float(re.search(r"\(read ([0-9.]+)s", stream.output()).group(1))


def test_a_record_cut_by_the_flushed_position_does_not_hold_back_the_changes_before_it(
        logical_database, redis_url, scratch_url, streams):
    """A read up to a flushed position inside a record would wait for the rest of the record,
    until something else flushes the WAL, holding back the changes committed before it."""
    extract(logical_database, redis_url)
    first = streams(redis_url, logical_database)
    first.wait_state("streaming")
    first.stop()
    commit(logical_database, "UPDATE payment_transactions SET status = 'failed' WHERE id = 4000")
    expected = extracted_values(logical_database, scratch_url)
    _cut_the_flushed_position(logical_database)
    client = redis.Redis.from_url(redis_url)
    try:
        stream = streams(redis_url, logical_database)
        wait_for(lambda: stored_values(client) == expected, timeout=30, interval=0.1,
                 what="the change committed before the cut record to be served")
    finally:
        client.close()
    # Read well within the contract's 5 s (a read up to the cut waits for the WAL writer's round,
    # 10 s here), and without the warning of a read that may wait.
    assert _first_read_seconds(stream) < 5
    assert "may wait for the WAL writer" not in stream.output()


def test_a_role_that_may_not_emit_the_message_reads_up_to_the_flushed_position_without_pausing(
        logical_postgres, logical_database, redis_url, scratch_url, streams):
    """A role that may not commit the message ending a read at a record's end (the function
    revoked) reads up to the flushed position as before, says so once, and serves the change
    once the WAL writer has flushed the rest."""
    role = logical_database.rsplit("/", 1)[1] + "_no_message"
    commit(logical_postgres.url(), f"CREATE ROLE {role} LOGIN REPLICATION")
    commit(logical_database, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
           "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC")
    url = logical_database.replace("postgres@", f"{role}@")
    extract(logical_database, redis_url)
    first = streams(redis_url, url)
    first.wait_state("streaming")
    first.stop()
    commit(logical_database, "UPDATE payment_transactions SET status = 'failed' WHERE id = 4000")
    _cut_the_flushed_position(logical_database)
    stream = streams(redis_url, url)
    wait_equal(logical_database, redis_url, scratch_url, timeout=30)
    output = stream.output()
    assert output.count("may wait for the WAL writer") == 1 and "permission denied" in output
    assert "streaming paused" not in output


def test_the_slot_is_dropped_by_the_documented_command(logical_database, redis_url, streams, make_app):
    stream = streams(redis_url, logical_database, slot="to_drop")
    stream.wait_state("streaming")
    stream.stop()
    runner = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=logical_database, STREAM_SLOT="to_drop").test_cli_runner()
    shown = runner.invoke(args=["features", "stream-slot", "status", "--json"])
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.output)["slot"] == "to_drop"
    dropped = runner.invoke(args=["features", "stream-slot", "drop"])
    assert dropped.exit_code == 0 and "dropped replication slot 'to_drop'" in dropped.output
    again = runner.invoke(args=["features", "stream-slot", "drop"])
    assert again.exit_code == 4 and "no replication slot 'to_drop'" in again.output


def test_the_procfile_stream_line_idles_and_stops_on_sigterm(scenario_sqlite, redis_url, tmp_path):
    import os
    import signal
    import subprocess

    from tests.conftest import PROJECT_DIR
    from tests.integration.test_process_lines import VENV_BIN, procfile

    log = tmp_path / "stream.log"
    with open(log, "w") as out:
        process = subprocess.Popen(["sh", "-c", f"exec {procfile()['stream']}"], cwd=PROJECT_DIR, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
                                        "REDIS_URL": redis_url, "WAREHOUSE_URL": scenario_sqlite})
        try:
            wait_for(lambda: "streaming idle" in log.read_text() or process.poll() is not None, timeout=30,
                     what="the stream line's log line")
            assert process.poll() is None, log.read_text()
            os.killpg(process.pid, signal.SIGTERM)
            assert process.wait(10) == 0, log.read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_ready_and_metrics_report_the_slot_and_its_lag(logical_database, redis_url, streams, make_app):
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=logical_database).test_client()
    assert client.get("/ready").get_json()["stream"] is None  # not set up yet
    stream = streams(redis_url, logical_database)
    stream.wait_state("streaming")
    report = wait_for(lambda: (r := client.get("/ready").get_json()["stream"]) and r["lag_seconds"] is not None
                      and r, timeout=30, what="/ready to report the stream")
    assert report["slot"] == "feature_store" and report["state"] == "streaming" and report["slot_exists"]
    assert isinstance(report["lag_bytes"], int) and report["wal_status"] == "reserved"
    metrics = client.get("/metrics").get_data(as_text=True)
    for name in ("streaming", "lag_bytes", "lag_seconds"):
        assert f'feature_store_stream_{name}{{slot="feature_store"}}' in metrics

    # A stopped process: the changes committed since wait in the slot, and both lags grow.
    stream.kill()
    before = client.get("/ready").get_json()["stream"]
    commit(logical_database, *CHANGES)
    after = wait_for(lambda: (r := client.get("/ready").get_json()["stream"])["lag_bytes"] > before["lag_bytes"]
                     and r["lag_seconds"] > before["lag_seconds"] and r, timeout=30, what="the lag to grow")
    assert after["confirmed_lsn"] == before["confirmed_lsn"]
    assert client.get("/ready").status_code == 200  # lagging values are still served


def test_ready_reports_an_idle_process_and_why(scenario_sqlite, redis_url, streams, make_app):
    streams(redis_url, scenario_sqlite).wait_state("idle")
    report = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite).test_client().get("/ready").get_json()
    assert report["stream"]["state"] == "idle" and "sqlite" in report["stream"]["reason"]
    assert report["stream"]["lag_seconds"] is None and report["stream"]["slot_exists"] is None


def test_a_truncate_is_refreshed_by_an_extraction_run(logical_database, redis_url, scratch_url, streams,
                                                      start_worker, make_app):
    extract(logical_database, redis_url)
    start_worker(logical_database)
    stream = streams(redis_url, logical_database)
    stream.wait_state("streaming")
    # No row of a TRUNCATE is logged: every value of the features reading the table may change.
    commit(logical_database, "TRUNCATE payment_transactions")
    expected = wait_equal(logical_database, redis_url, scratch_url, timeout=60)
    assert not any(name.startswith("payment_type:") for name in expected)
    assert "extraction run for payment_type, user_failed_transaction_count, user_policy_time_of_purchase" \
        in stream.output()
    # The run's history says the streaming process started it (GET /extract, as the OpenAPI document says).
    client = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=logical_database).test_client()
    runs = lambda: client.get("/api/v1/features/extract").get_json()["runs"]  # noqa: E731
    wait_for(lambda: [run["status"] for run in runs()] == ["finished"], timeout=30, what="the run to finish")
    (run,) = runs()
    assert run["trigger"] == "stream"
    assert run["feature_types"] == ["payment_type", "user_failed_transaction_count", "user_policy_time_of_purchase"]
    assert client.get(f"/api/v1/features/extract/{run['job_id']}").get_json()["trigger"] == "stream"
    document = client.get("/api/v1/openapi.json").get_json()
    assert "stream" in document["components"]["schemas"]["RunFinished"]["properties"]["trigger"]["enum"]
