"""Optional API keys (read and admin scopes) and request ids."""

from __future__ import annotations

import logging

import pytest

from feature_store import create_app

BASE = "/api/v1/features"
READ, ADMIN = "read-key-1", "admin-key-1"


@pytest.fixture
def locked(scenario_sqlite):
    app = create_app({"REDIS_URL": None, "WAREHOUSE_URL": scenario_sqlite, "EXTRACT_ON_START": False,
                      "API_KEYS_READ": (READ, "read-key-2"), "API_KEYS_ADMIN": (ADMIN,)})
    yield app.test_client()
    app.extensions["feature_store"].close()


def calls(client, headers):
    body = {"feature_type": "payment_type", "entity_id": "2000"}
    return {
        "discovery": client.get(f"{BASE}/discovery", headers=headers),
        "inference": client.post(f"{BASE}/inference", json=body, headers=headers),
        "training": client.post(f"{BASE}/training", json={"features": [body]}, headers=headers),
        "extract": client.post(f"{BASE}/extract", headers=headers),
        "status": client.get(f"{BASE}/extract/extract-0", headers=headers),
    }


def test_without_keys_configured_the_api_is_open_and_says_so(client, caplog):
    assert client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": 2000}).status_code == 200
    from config import Config
    from feature_store import startup_line
    assert "API open" in startup_line(Config.from_env(REDIS_URL=None))
    assert "API keys required" in startup_line(Config.from_env(REDIS_URL=None, API_KEYS_READ=("k",)))


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"Authorization": "Bearer nope"},
                                     {"X-API-Key": READ + "x"}, {"X-API-Key": READ[:-1]}])
def test_a_missing_or_wrong_key_is_401_everywhere(locked, headers):
    for name, response in calls(locked, headers).items():
        assert response.status_code == 401, name
        assert response.get_json()["success"] is False
        assert response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("headers", [{"X-API-Key": READ}, {"X-API-Key": "read-key-2"},
                                     {"Authorization": f"Bearer {READ}"}])
def test_a_read_key_reads_but_may_not_extract(locked, headers):
    answers = calls(locked, headers)
    assert answers["discovery"].status_code == 200
    assert answers["inference"].status_code == 200
    assert answers["training"].status_code == 200
    assert answers["extract"].status_code == 403 and "admin" in answers["extract"].get_json()["error"]
    assert answers["status"].status_code == 403


def test_an_admin_key_may_do_everything(locked):
    answers = calls(locked, {"X-API-Key": ADMIN})
    assert [answers[n].status_code for n in ("discovery", "inference", "training", "extract", "status")] == [
        200, 200, 200, 200, 404]


def test_keys_never_reach_the_log(locked, caplog):
    with caplog.at_level(logging.DEBUG):
        calls(locked, {"X-API-Key": ADMIN})
        calls(locked, {"X-API-Key": "wrong-secret-attempt"})
    assert caplog.records
    assert ADMIN not in caplog.text and "wrong-secret-attempt" not in caplog.text


def test_every_answer_carries_a_request_id_that_its_log_line_carries(client, caplog):
    with caplog.at_level(logging.INFO, logger="feature_store.access"):
        ok = client.get(f"{BASE}/discovery")
        bad = client.post(f"{BASE}/inference", data=b"nope")
        missing = client.get("/nowhere")
    for response in (ok, bad, missing):
        request_id = response.headers["X-Request-ID"]
        assert len(request_id) == 32
        assert request_id in caplog.text
    assert bad.get_json()["request_id"] == bad.headers["X-Request-ID"]
    assert len({ok.headers["X-Request-ID"], bad.headers["X-Request-ID"], missing.headers["X-Request-ID"]}) == 3


def test_a_caller_request_id_is_kept_when_well_formed(client):
    assert client.get(f"{BASE}/discovery", headers={"X-Request-ID": "trace-123"}).headers["X-Request-ID"] == "trace-123"
    forged = client.get(f"{BASE}/discovery", headers={"X-Request-ID": "bad id <script>"})
    assert len(forged.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("item", [{"feature_type": "payment_type", "entity_id": "999999999"},
                                  {"feature_type": "no_such_feature", "entity_id": "1"},
                                  {"feature_type": "payment_type", "entity_id": 10**30}])  # the Flask view's
def test_a_not_found_inference_answer_carries_its_request_id(client, item):
    response = client.post(f"{BASE}/inference", json=item, headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.get_json()["request_id"] == "trace-404" == response.headers["X-Request-ID"]
