"""The command line (`flask --app wsgi features ...`): every command on the app's own services,
and the exit codes scripts rely on (0 success, 1 the run failed, 2 usage/config or a store
unreachable, 3 no worker listens, 4 no such run, 5 the run is not over yet)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from feature_store import cli
from feature_store.cli import features
from feature_store.features import REGISTRY
from feature_store.services import discovery
from feature_store.services.jobs import RunStatus
from tests import scenario
from tests.conftest import PROJECT_DIR, free_port

EXPECTED = scenario.expected_values()
COUNTS = {feature_type: len(values) for feature_type, values in EXPECTED.items()}
FLASK = str(os.path.join(os.path.dirname(sys.executable), "flask"))


@pytest.fixture
def run(embedded_app):
    """Invoke a `features` command on the embedded app: run("extract", "--json")."""
    runner = embedded_app.test_cli_runner()
    return lambda *args: runner.invoke(features, list(args))


def test_list_names_each_feature_with_its_entity_data_type_and_sets(run):
    result = run("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["FEATURE", "TYPE", "ENTITY", "TYPE", "DATA", "TYPE", "FEATURE", "SETS"]
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert rows["user_failed_transaction_count"] == ["user_failed_transaction_count", "user_id", "integer",
                                                     "underwriting_v1"]
    assert rows["payment_type"] == ["payment_type", "payment_transaction_id", "string", "-"]
    assert set(rows) == set(REGISTRY.feature_types())
    assert "underwriting_v1 (user_id): user_policy_time_of_purchase, user_failed_transaction_count" in result.stdout


def test_list_json_is_the_catalog(run, embedded_app):
    result = run("list", "--json")
    assert result.exit_code == 0
    services = embedded_app.extensions["feature_store"]
    assert json.loads(result.stdout) == {"features": discovery.catalog(REGISTRY, services.store,
                                                                       services.server.max_ages),
                                         "feature_sets": discovery.feature_sets(REGISTRY)}


def test_extract_runs_inline_in_embedded_mode_and_prints_the_result(run, fake_redis):
    result = run("extract")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == f"{sum(COUNTS.values()):,} values refreshed:"
    for feature_type, count in COUNTS.items():
        assert f"  {feature_type}: {count:,}" in result.stdout
    job_id = result.stdout.split()[1].rstrip(":")
    assert f"started run {job_id}" in result.stderr
    assert fake_redis.exists("payment_type:2000")
    shown = run("run", job_id)
    assert shown.exit_code == 0 and "status:        finished" in shown.stdout


def test_extract_json_some_features(run, fake_redis):
    result = run("extract", "--feature-type", "payment_type", "--json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["status"] == "finished" and body["joined"] is False and body["feature_types"] == ["payment_type"]
    assert body["result"]["features_extracted"] == {"payment_type": COUNTS["payment_type"]}
    assert not fake_redis.keys("user_failed_transaction_count:*")


def test_extract_no_wait_prints_the_job_id(run):
    result = run("extract", "--no-wait")
    assert result.exit_code == 0
    (job_id,) = result.stdout.split()
    assert job_id.startswith("extract-")
    assert json.loads(run("run", job_id, "--json").stdout)["job_id"] == job_id


def test_extract_of_an_unknown_feature_is_a_usage_error_and_starts_nothing(run):
    result = run("extract", "--feature-type", "payment_type", "--feature-type", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("unknown feature type(s): nope; known feature types: user_policy_time_of_purchase")
    assert run("extract", "--timeout", "0").exit_code == 2  # click's own usage errors are 2 too
    assert json.loads(run("runs", "--json").stdout) == {"runs": []}


def test_a_failed_run_exits_1_naming_the_feature(run, scenario_sqlite):
    scenario.execute(scenario_sqlite, "DROP TABLE quotes")
    result = run("extract")
    assert result.exit_code == 1
    assert "failed (previous values kept):\n  quote_creation_to_binding_time: " in result.stdout
    assert "no such table: quotes" in result.stdout
    assert "extraction failed: extraction failed for 1 feature (quote_creation_to_binding_time" in result.stderr
    job_id = result.stdout.split()[1].rstrip(":")
    shown = run("run", job_id)
    assert shown.exit_code == 1 and "status:        failed" in shown.stdout and "error:" in shown.stdout


def test_extract_with_the_warehouse_unreachable_exits_2(make_app, tmp_path):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=f"sqlite:///{tmp_path / 'missing.db'}", EXTRACT_ON_START=False)
    result = app.test_cli_runner().invoke(features, ["extract"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert json.loads(app.test_cli_runner().invoke(features, ["runs", "--json"]).stdout) == {"runs": []}


def test_runs_are_listed_newest_first(run):
    assert run("runs").exit_code == 0 and "no extraction runs" in run("runs").stderr
    ids = [run("extract", "--no-wait", "--feature-type", "payment_type").stdout.strip() for _ in range(3)]
    listed = run("runs")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "ID", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ids[::-1]
    assert all(line.split()[1] == "finished" and line.split()[-1] == "payment_type" for line in lines[1:])
    body = json.loads(run("runs", "--limit", "2", "--json").stdout)
    assert [r["job_id"] for r in body["runs"]] == ids[:0:-1]
    assert body["runs"][0]["features_extracted"] == {"payment_type": COUNTS["payment_type"]}
    assert run("runs", "--limit", "0").exit_code == 2


def test_run_shows_one_run_or_exits_4(run, embedded_app):
    job_id = run("extract", "--no-wait").stdout.strip()
    shown = run("run", job_id, "--json")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == embedded_app.extensions["feature_store"].runs.status(job_id).as_dict()
    for unknown in ("extract-0123456789abcdef", "nope", "extract-../x"):
        missing = run("run", unknown)
        assert missing.exit_code == 4 and f"no extraction job {unknown!r}" in missing.stderr


def test_demo_warehouse(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'demo' / 'w.db'}"
    made = run("demo-warehouse", "--users", "40", "--url", url, "--seed", "3")
    assert made.exit_code == 0, made.output
    with sqlite3.connect(tmp_path / "demo" / "w.db") as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("users", "quotes", "policies", "payment_transactions")}
    assert counts["users"] == 40
    assert made.stdout.startswith(f"warehouse {url}: " + ", ".join(f"{n} {t}" for t, n in counts.items()) + " in ")
    again = run("demo-warehouse", "--users", "40", "--url", url)
    assert again.exit_code == 2 and "pass --replace to recreate them" in again.stderr
    kept = run("demo-warehouse", "--users", "40", "--url", url, "--if-missing")
    assert kept.exit_code == 0 and "exists; left as it is" in kept.stdout
    replaced = run("demo-warehouse", "--users", "7", "--url", url, "--replace")
    assert replaced.exit_code == 0 and ": 7 users, " in replaced.stdout
    assert run("demo-warehouse", "--url", url).exit_code == 2  # --users is required
    assert run("demo-warehouse", "--users", "0", "--url", url).exit_code == 2
    assert run("demo-warehouse", "--users", "5", "--url", "nonsense://x").exit_code == 2


def test_demo_warehouse_defaults_to_the_apps_warehouse(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=url, EXTRACT_ON_START=False)
    runner = app.test_cli_runner()
    assert runner.invoke(features, ["demo-warehouse", "--users", "30"]).exit_code == 0
    result = runner.invoke(features, ["extract", "--feature-type", "user_failed_transaction_count", "--json"])
    assert json.loads(result.stdout)["result"]["features_extracted"] == {"user_failed_transaction_count": 30}


def test_an_unreachable_online_store_exits_2(make_app, scenario_sqlite):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", WAREHOUSE_URL=scenario_sqlite,
                   REDIS_LOCAL_CACHE=False)
    runner = app.test_cli_runner()
    for args in (["extract"], ["extract", "--no-wait"], ["runs"], ["run", "extract-0123"]):
        result = runner.invoke(features, args)
        assert result.exit_code == 2, args
        assert result.stderr == "error: the online store (Redis) is unreachable or not answering\n"
    assert runner.invoke(features, ["list"]).exit_code == 0  # the catalog needs no store


def test_extract_with_no_worker_listening_exits_3(make_app, redis_url, scenario_sqlite):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    runner = app.test_cli_runner()
    result = runner.invoke(features, ["extract"])
    assert result.exit_code == 3
    job_id = result.stdout.strip()
    assert job_id.startswith("extract-")
    assert (f"no worker listens on the extraction queue 'feature-extraction': run {job_id} stays queued and "
            "starts when a worker does") in result.stderr
    # A second call joins the queued run instead of queueing another.
    again = runner.invoke(features, ["extract", "--json"])
    assert again.exit_code == 3
    assert json.loads(again.stdout) | {"enqueued_at": None} == {
        "job_id": job_id, "status": "queued", "trigger": "api", "feature_types": REGISTRY.feature_types(),
        "enqueued_at": None, "started_at": None, "ended_at": None, "joined": True, "workers": 0}
    shown = runner.invoke(features, ["run", job_id])
    assert shown.exit_code == 5 and "status:        queued" in shown.stdout
    listed = runner.invoke(features, ["runs"])
    assert listed.exit_code == 0 and listed.stdout.splitlines()[1].split()[:2] == [job_id, "queued"]


def test_extract_times_out_with_exit_5_showing_the_status(make_app, redis_url, scenario_sqlite, monkeypatch):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    # A worker that registered but never takes the run (busy elsewhere, say).
    monkeypatch.setattr(app.extensions["feature_store"].runs, "listening_workers", lambda: 1)
    result = app.test_cli_runner().invoke(features, ["extract", "--timeout", "0.3"])
    assert result.exit_code == 5
    job_id = result.stdout.split()[1].rstrip(":")
    assert result.stdout.startswith(f"run {job_id}: queued")
    assert f"{job_id}: queued\n" in result.stderr  # the status line
    assert f"run {job_id} is not over after 0.3s (still queued)" in result.stderr


def test_extract_waits_for_a_real_worker(make_app, redis_url, scenario_sqlite, start_worker):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    start_worker(scenario_sqlite)
    result = app.test_cli_runner().invoke(features, ["extract", "--timeout", "60"])
    assert result.exit_code == 0, result.output
    for feature_type, count in COUNTS.items():
        assert f"  {feature_type}: {count:,}" in result.stdout
    job_id = result.stdout.split()[1].rstrip(":")
    assert app.test_cli_runner().invoke(features, ["run", job_id]).exit_code == 0


def test_the_status_line_follows_the_phases():
    def status(state):
        return RunStatus("extract-x", state, "api", ["a"], None, None, None, None, None)

    assert cli._describe_progress(status("queued"), None) == "queued"
    assert cli._describe_progress(status("started"), None) == "started: querying the warehouse"
    assert cli._describe_progress(status("started"), {"phase": "write", "counts": {"a": 1200, "b": 3}}) == (
        "started: writing 1,203 values of 2 feature(s) to the online store")
    assert cli._describe_progress(status("started"), {"phase": "remove_stale", "counts": {"a": 5}}) == (
        "started: removing the values of gone entities (5 values written)")


def _flask(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "EXTRACT_SCHEDULE")}
    environment.update(EXTRACT_ON_START="0", **env)
    return subprocess.run([FLASK, "--app", "wsgi", "features", *args], cwd=PROJECT_DIR, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_the_real_entry_point_lists_the_features(scenario_sqlite):
    result = _flask("list", WAREHOUSE_URL=scenario_sqlite)
    assert result.returncode == 0, result.stderr
    assert "user_failed_transaction_count   user_id                 integer    underwriting_v1" in result.stdout
    assert "EMBEDDED mode" in result.stderr  # the app's start-up line: logs go to stderr, never stdout
    body = json.loads(_flask("list", "--json", WAREHOUSE_URL=scenario_sqlite).stdout)
    assert [f["feature_type"] for f in body["features"]] == REGISTRY.feature_types()


def test_the_real_entry_point_exits_3_when_no_worker_listens(redis_url, scenario_sqlite):
    result = _flask("extract", REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip().startswith("extract-")
    assert "no worker listens on the extraction queue 'feature-extraction'" in result.stderr
