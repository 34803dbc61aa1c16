"""Extraction runs in embedded mode (inline jobs, fakeredis): runs of some features, one feature's
failure, the run history, ?wait, the in-process schedule, and the probes."""

from __future__ import annotations

import pytest

from feature_store.features import REGISTRY
from tests import scenario
from tests.conftest import wait_for

BASE = "/api/v1/features"
EXPECTED = scenario.expected_values()


def test_a_run_of_some_features_refreshes_only_those(client, fake_redis):
    response = client.post(f"{BASE}/extract", json={"feature_types": ["payment_type"]})
    assert response.status_code == 200
    assert response.get_json()["features_extracted"] == {"payment_type": len(EXPECTED["payment_type"])}
    written = {k.split(b":")[0] for k in fake_redis.keys("*") if not k.startswith((b"rq:", b"feature-store:"))}
    assert written == {b"payment_type"}
    run = client.get(f"{BASE}/extract").get_json()["runs"][0]
    assert run["feature_types"] == ["payment_type"] and run["trigger"] == "api"


@pytest.mark.parametrize(("body", "error"), [
    ({"feature_types": []}, "feature_types: must not be empty"),
    ({"feature_types": "payment_type"}, "feature_types: must be a list"),
    ({"feature_types": None}, "feature_types: must be a list"),
    ({"feature_types": [None]}, "feature_types[0]: must be a string"),
    ({"feature_types": ["payment_type", 7]}, "feature_types[1]: must be a string"),
    ({"feature_types": ["payment_type", "no_such_feature"]}, "feature_types[1]: unknown feature_type "
                                                             "'no_such_feature'"),
    ([], "the request body must be a JSON object"),
])
def test_a_malformed_run_request_is_a_400_naming_what_is_wrong(client, body, error):
    response = client.post(f"{BASE}/extract", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(error)
    assert client.get(f"{BASE}/extract").get_json()["runs"] == []  # nothing was started


def test_an_unknown_feature_type_lists_the_known_ones(client):
    body = client.post(f"{BASE}/extract", json={"feature_types": ["nope"]}).get_json()
    assert body["known_feature_types"] == REGISTRY.feature_types()


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.post(f"{BASE}/extract", data=b"{not json", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.get_json()["error"]


def test_no_body_or_no_feature_types_means_every_feature(client):
    for kwargs in ({}, {"json": {}}, {"json": {"other": 1}}):
        body = client.post(f"{BASE}/extract", **kwargs).get_json()
        assert set(body["features_extracted"]) == set(EXPECTED)


@pytest.mark.parametrize("wait", ["1", "0", "yes", "no", "", "maybe"])
def test_wait_is_true_or_false_only(client, wait):
    response = client.post(f"{BASE}/extract?wait={wait}")
    assert response.status_code == 400 and response.get_json()["error"] == "wait must be true or false"


@pytest.mark.parametrize(("wait", "status"), [("true", 200), ("TRUE", 200), ("false", 202), ("False", 202)])
def test_wait_true_or_false_in_any_case(client, wait, status):
    assert client.post(f"{BASE}/extract?wait={wait}").status_code == status


def test_one_feature_failing_in_embedded_mode(client, scenario_sqlite, fake_redis):
    assert client.post(f"{BASE}/extract").status_code == 200
    quotes = {k: fake_redis.hgetall(k) for k in fake_redis.keys("quote_creation_to_binding_time:*")}
    scenario.execute(scenario_sqlite, "DROP TABLE quotes")
    scenario.execute(scenario_sqlite, "DELETE FROM payment_transactions WHERE id = 2001")
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 500
    body = response.get_json()
    assert list(body["failed_features"]) == ["quote_creation_to_binding_time"]
    assert "no such table: quotes" in body["failed_features"]["quote_creation_to_binding_time"]
    assert set(body["features_extracted"]) == set(EXPECTED) - {"quote_creation_to_binding_time"}
    assert {k: fake_redis.hgetall(k) for k in fake_redis.keys("quote_creation_to_binding_time:*")} == quotes
    assert not fake_redis.exists("payment_type:2001")
    status = client.get(f"{BASE}/extract/{body['job_id']}").get_json()
    assert status["status"] == "failed" and status["success"] is False
    assert status["ended_at"] is not None and status["ended_at"] >= status["started_at"]
    runs = client.get(f"{BASE}/extract").get_json()["runs"]
    assert [run["status"] for run in runs] == ["failed", "finished"]
    assert runs[0]["failed_features"] == body["failed_features"] and runs[0]["ended_at"] == status["ended_at"]


def test_the_run_history_is_newest_first_and_limited(client):
    ids = [client.post(f"{BASE}/extract", json={"feature_types": ["payment_type"]}).get_json()["job_id"]
           for _ in range(3)]
    runs = client.get(f"{BASE}/extract").get_json()["runs"]
    assert [run["job_id"] for run in runs] == ids[::-1]
    assert [run["job_id"] for run in client.get(f"{BASE}/extract?limit=2").get_json()["runs"]] == ids[:0:-1]
    for limit in ("0", "101", "x", "-1"):
        response = client.get(f"{BASE}/extract?limit={limit}")
        assert response.status_code == 400 and "limit" in response.get_json()["error"]


def test_at_least_the_last_20_runs_are_listed(client):
    ids = [client.post(f"{BASE}/extract", json={"feature_types": ["payment_type"]}).get_json()["job_id"]
           for _ in range(25)]
    assert [run["job_id"] for run in client.get(f"{BASE}/extract").get_json()["runs"]] == ids[::-1][:20]
    assert [run["job_id"] for run in client.get(f"{BASE}/extract?limit=100").get_json()["runs"]] == ids[::-1]


def test_many_runs_in_one_second_do_not_stamp_values_in_the_future(client, fake_redis):
    from datetime import UTC, datetime

    for _ in range(5):
        client.post(f"{BASE}/extract", json={"feature_types": ["payment_type"]})
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat()  # served times are naive UTC
    for run in client.get(f"{BASE}/extract").get_json()["runs"]:
        status = client.get(f"{BASE}/extract/{run['job_id']}").get_json()
        assert status["result"]["computed_at"] <= status["ended_at"]
    answer = client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": 2000}).get_json()
    assert answer["computed_at"] <= now


def test_the_slot_names_no_run_once_it_is_over(client, fake_redis):
    client.post(f"{BASE}/extract")
    assert fake_redis.get("feature-store:extraction:current") is None


def test_embedded_mode_keeps_the_schedule_in_process(make_app, scenario_sqlite):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False, EXTRACT_SCHEDULE="1")
    client = app.test_client()
    run = wait_for(lambda: next(iter(client.get(f"{BASE}/extract").get_json()["runs"]), None), timeout=10,
                   what="a scheduled run")
    assert run["trigger"] == "schedule"
    assert wait_for(lambda: client.get(f"{BASE}/extract/{run['job_id']}").get_json()["status"] == "finished")


def test_a_malformed_schedule_fails_the_start(scenario_sqlite):
    from feature_store import create_app

    with pytest.raises(ValueError, match="EXTRACT_SCHEDULE"):
        create_app({"REDIS_URL": None, "WAREHOUSE_URL": scenario_sqlite, "EXTRACT_SCHEDULE": "every day"})


def test_health_touches_nothing_and_ready_checks_the_stores(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"redis": "ok", "warehouse": "ok"}, "workers": None,
                                "queue": "feature-extraction", "embedded": True, "stream": None}


def test_ready_names_a_missing_warehouse(make_app, tmp_path):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=f"sqlite:///{tmp_path / 'missing.db'}", EXTRACT_ON_START=False)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["success"] is False and body["status"] == "not ready"
    assert body["checks"]["redis"] == "ok" and body["checks"]["warehouse"] != "ok"
    assert body["error"].startswith("not ready: warehouse:")
