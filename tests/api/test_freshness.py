"""Freshness: every value answer carries its age; a cached value older than its feature's max age
is recomputed on read; when the warehouse cannot recompute it, it is served marked stale."""

from __future__ import annotations

import pytest

from feature_store import create_app
from feature_store.features import REGISTRY
from feature_store.online_store import now_seconds
from feature_store.services.freshness import max_ages
from tests.conftest import free_port

BASE = "/api/v1/features"
FAILED = "user_failed_transaction_count"
DAY = 24 * 3600


def infer(client, feature_type, entity_id):
    return client.post(f"{BASE}/inference", json={"feature_type": feature_type, "entity_id": entity_id})


def plant(store, feature_type, entity_id, value: bytes, age: int) -> int:
    """Store `value` as if computed `age` seconds ago (with the feature's current version)."""
    computed_at = now_seconds() - age
    store.write(feature_type, [(entity_id, value)], computed_at)
    return computed_at


def test_max_ages_come_from_the_declarations_and_the_environment_overrides_them():
    assert max_ages(REGISTRY) == {"user_policy_time_of_purchase": DAY, "quote_creation_to_binding_time": DAY,
                                  FAILED: DAY, "payment_type": 7 * DAY}
    ages = max_ages(REGISTRY, f" {FAILED}=60 , payment_type=0")
    assert ages[FAILED] == 60 and ages["payment_type"] is None and ages["quote_creation_to_binding_time"] == DAY


@pytest.mark.parametrize("overrides, says", [
    ("nope=5", "not feature_type=seconds"), (FAILED, "not feature_type"), (f"{FAILED}=1.5", "whole number"),
    (f"{FAILED}=-1", "whole number"), (f"{FAILED}=\u0665", "whole number"),  # an Arabic-Indic 5: not ASCII
    (f"{FAILED}=99999999999999999999999", "up to"), (f"{FAILED}=5,{FAILED}=0", "twice")])
def test_a_malformed_max_age_override_fails_the_start(scenario_sqlite, overrides, says):
    with pytest.raises(ValueError, match=says):
        create_app({"REDIS_URL": None, "WAREHOUSE_URL": scenario_sqlite, "FEATURE_MAX_AGE": overrides})


def test_a_value_within_its_max_age_is_served_from_the_store_with_its_age(client, embedded_app):
    store = embedded_app.extensions["feature_store"].store
    plant(store, FAILED, 2, b"41", age=DAY - 60)  # not the warehouse's value (2): proves it is the cached one
    body = infer(client, FAILED, 2).get_json()
    assert body["feature_value"] == 41 and body["stale"] is False
    assert DAY - 60 <= body["age_seconds"] <= DAY - 58


def test_a_value_past_its_max_age_is_recomputed_on_read(client, embedded_app):
    store = embedded_app.extensions["feature_store"].store
    plant(store, FAILED, 2, b"41", age=DAY + 60)
    body = infer(client, FAILED, 2).get_json()
    assert body["feature_value"] == 2 and body["stale"] is False and body["age_seconds"] <= 1
    assert store.read([(FAILED, "2")])[0][0] == b"2"  # and stored afresh
    # /training recomputes old values set-based, beside fresh ones.
    plant(store, FAILED, 2, b"41", age=DAY + 60)
    plant(store, FAILED, 3, b"42", age=10)
    items = [{"feature_type": FAILED, "entity_id": i} for i in (2, 3)]
    results = client.post(f"{BASE}/training", json={"features": items}).get_json()["results"]
    assert [r["feature_value"] for r in results] == [2, 42]


def test_a_max_age_override_applies(scenario_sqlite, make_app):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False,
                   FEATURE_MAX_AGE=f"{FAILED}=0")
    plant(app.extensions["feature_store"].store, FAILED, 2, b"41", age=100 * DAY)
    assert infer(app.test_client(), FAILED, 2).get_json()["feature_value"] == 41  # no limit


def test_a_stale_value_is_served_marked_stale_when_the_warehouse_is_down(redis_url, make_app):
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    client = app.test_client()
    store = app.extensions["feature_store"].store
    computed_at = plant(store, FAILED, 2, b"41", age=DAY + 60)
    for _ in range(2):  # the second within the retry pause: served at once, still stale
        response = infer(client, FAILED, 2)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["feature_value"] == 41 and body["stale"] is True and body["age_seconds"] >= DAY + 60
    assert store.read([(FAILED, "2")])[0] == (b"41", computed_at)  # kept as it was
    # A value not cached at all still needs the warehouse: 503, as before.
    assert infer(client, FAILED, 3).status_code == 503
    # A feature set answers the same way for its stale values.
    plant(store, "user_policy_time_of_purchase", 2, b'"2025-01-01T00:00:00"', age=DAY + 60)
    values = client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": 2}).get_json()
    assert values["success"] is True and all(v["stale"] for v in values["values"].values())


def test_discovery_shows_each_feature_s_freshness_and_versions(client, embedded_app):
    before = {e["feature_type"]: e for e in client.get(f"{BASE}/discovery").get_json()}
    assert before[FAILED]["freshness"] == {"max_age_seconds": DAY, "last_refreshed_at": None, "last_run_id": None,
                                           "age_seconds": None, "fresh": None}
    assert before[FAILED]["version"] == 1 and before[FAILED]["versions"] == [
        {"version": 1, "fingerprint": before[FAILED]["fingerprint"], "began": "2025-01-01"}]
    first = client.post(f"{BASE}/extract").get_json()["job_id"]
    assert all(e["drift"] is None for e in client.get(f"{BASE}/discovery").get_json())  # nothing to compare yet
    job_id = client.post(f"{BASE}/extract").get_json()["job_id"]
    after = {e["feature_type"]: e for e in client.get(f"{BASE}/discovery").get_json()}
    for entry in after.values():
        assert entry["freshness"]["last_run_id"] == job_id and entry["freshness"]["fresh"] is True
        assert entry["freshness"]["age_seconds"] in (0, 1)
        # The same warehouse twice: compared with the first run, no drift.
        assert entry["drift"]["previous_job_id"] == first and entry["drift"]["job_id"] == job_id
        assert entry["drift"]["drifted"] is False and entry["drift"]["psi_threshold"] == 0.2
    # A run long ago: past the max age.
    store = embedded_app.extensions["feature_store"].store
    store.redis.delete("feature-store:refreshed")
    store.note_refreshed([FAILED], "extract-old", now_seconds() - DAY - 5)
    old = {e["feature_type"]: e for e in client.get(f"{BASE}/discovery").get_json()}[FAILED]["freshness"]
    assert old["fresh"] is False and old["last_run_id"] == "extract-old" and old["age_seconds"] >= DAY + 5
    # A later record is never replaced by an earlier run's.
    store.note_refreshed([FAILED], "extract-older", now_seconds() - 2 * DAY)
    assert store.refreshed()[FAILED]["job_id"] == "extract-old"


def test_discovery_answers_without_freshness_when_redis_is_down(scenario_sqlite, make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", WAREHOUSE_URL=scenario_sqlite)
    response = app.test_client().get(f"{BASE}/discovery")
    assert response.status_code == 200
    assert all(e["freshness"] is None and e["drift"] is None and e["version"] == 1 for e in response.get_json())


def test_the_launcher_refuses_a_malformed_max_age_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import PROJECT_DIR

    env = {**os.environ, "FEATURE_MAX_AGE": "payment_type=abc", "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-m", "feature_store"], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "FEATURE_MAX_AGE: the max age of payment_type must be a whole number" in done.stderr
    assert "Traceback" not in done.stderr and "Listening" not in done.stderr
