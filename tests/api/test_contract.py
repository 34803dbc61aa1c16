"""CONTRACT.md, endpoint by endpoint, on the embedded app (fakeredis, inline jobs) over the SQLite
scenario warehouse. The same behaviours on real Redis, workers and PostgreSQL: tests/integration."""

from __future__ import annotations

import io
import json
import re

import pytest
from sqlalchemy import event

from feature_store.features import REGISTRY
from feature_store.versions import fingerprint
from tests import scenario

BASE = "/api/v1/features"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")
EXPECTED = scenario.expected_values()


def infer(client, feature_type, entity_id):
    return client.post(f"{BASE}/inference", json={"feature_type": feature_type, "entity_id": entity_id})


@pytest.fixture
def warehouse_queries(embedded_app):
    """Every SQL statement the app sends to the warehouse (request path)."""
    statements: list[str] = []
    engine = embedded_app.extensions["feature_store"].warehouse.request_engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    return statements


# --- discovery ---------------------------------------------------------------------------------

def test_discovery_lists_every_feature_with_its_metadata(client):
    response = client.get(f"{BASE}/discovery")
    assert response.status_code == 200
    features = response.get_json()
    assert [f["feature_type"] for f in features] == list(EXPECTED)
    for feature in features:
        assert {"feature_type", "name", "description", "entity_type", "data_type", "created_at"} <= feature.keys()
        assert ISO.match(feature["created_at"])
    assert features[0]["entity_type"] == "user_id" and features[0]["data_type"] == "datetime"


# --- inference ----------------------------------------------------------------------------------

@pytest.mark.parametrize("feature_type", list(EXPECTED))
def test_inference_computes_every_value_on_demand_and_then_serves_it_cached(client, fake_redis, feature_type):
    for entity_id, value in EXPECTED[feature_type].items():
        first = infer(client, feature_type, entity_id)
        assert first.status_code == 200, first.get_json()
        body = first.get_json()
        assert body == {"feature_type": feature_type, "entity_id": entity_id, "feature_value": value,
                        "computed_at": body["computed_at"], "age_seconds": body["age_seconds"], "stale": False,
                        "success": True}
        assert ISO.match(body["computed_at"]) and body["age_seconds"] in (0, 1)  # just computed
        assert fake_redis.exists(f"{feature_type}:{entity_id}")
        again = infer(client, feature_type, entity_id).get_json()
        # Same computed_at: served from the store, not recomputed (only its age may have grown).
        assert again == body | {"age_seconds": again["age_seconds"]} and again["age_seconds"] >= body["age_seconds"]


def test_inference_accepts_integer_entity_ids_beyond_2_to_the_53(client):
    body = infer(client, "user_failed_transaction_count", scenario.BIG).get_json()
    assert body["entity_id"] == str(scenario.BIG) and body["feature_value"] == 0
    body = infer(client, "payment_type", scenario.HUGE).get_json()
    assert body["entity_id"] == str(scenario.HUGE) and body["feature_value"] == "Debit"


def test_inference_serves_what_extraction_stored(client, fake_redis):
    assert client.post(f"{BASE}/extract").status_code == 200
    fake_redis.hset("user_failed_transaction_count:3", "value", b"41")  # proof it comes from Redis
    assert infer(client, "user_failed_transaction_count", "3").get_json()["feature_value"] == 41


def test_unknown_feature_type_is_404_naming_the_known_ones(client):
    response = infer(client, "no_such_feature", "1")
    assert response.status_code == 404
    body = response.get_json()
    assert body["success"] is False
    for feature_type in EXPECTED:
        assert feature_type in body["error"]


def test_an_entity_that_does_not_exist_is_404(client):
    response = infer(client, "user_policy_time_of_purchase", "999")
    assert response.status_code == 404
    assert response.get_json() == {"feature_type": "user_policy_time_of_purchase", "entity_id": "999",
                                   "feature_value": None, "success": False,
                                   "error": response.get_json()["error"],
                                   "request_id": response.headers["X-Request-ID"]}


@pytest.mark.parametrize("entity_id", scenario.NON_IDS)
def test_ids_that_name_no_row_are_plain_not_found_and_touch_nothing(client, fake_redis, warehouse_queries,
                                                                   entity_id):
    response = infer(client, "user_failed_transaction_count", entity_id)
    assert response.status_code == 404
    assert response.get_json()["entity_id"] == entity_id
    assert warehouse_queries == []
    assert fake_redis.dbsize() == 0


@pytest.mark.parametrize("body", [
    b"not json", b"", b"[1, 2]", b'"text"', b"null", b"{",
    b'{"entity_id": "1"}', b'{"feature_type": "payment_type"}',
    b'{"feature_type": "payment_type", "entity_id": true}',
    b'{"feature_type": "payment_type", "entity_id": 1.0}',
    b'{"feature_type": "payment_type", "entity_id": null}',
    b'{"feature_type": "payment_type", "entity_id": [1]}',
    b'{"feature_type": 5, "entity_id": "1"}',
    b'{"feature_type": "payment_type", "entity_id": NaN}',
    b"[" * 100_000 + b"]" * 100_000,
])
def test_malformed_inference_requests_are_400_json(client, body):
    response = client.post(f"{BASE}/inference", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.is_json
    assert response.get_json()["success"] is False and response.get_json()["error"]


def test_unknown_request_fields_are_ignored(client):
    response = client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": "2000",
                                                     "trace": {"x": 1}})
    assert response.status_code == 200 and response.get_json()["feature_value"] == "Credit"


# --- training -----------------------------------------------------------------------------------

def test_training_answers_in_request_order_with_totals(client):
    items = [{"feature_type": "user_policy_time_of_purchase", "entity_id": "3"},
             {"feature_type": "nope", "entity_id": "3"},
             {"feature_type": "user_failed_transaction_count", "entity_id": 2},
             {"feature_type": "payment_type", "entity_id": "404404"},
             {"feature_type": "quote_creation_to_binding_time", "entity_id": "42", "ignored": True}]
    response = client.post(f"{BASE}/training", json={"features": items})
    assert response.status_code == 200
    body = response.get_json()
    assert body["total_requested"] == 5 and body["total_successful"] == 3
    results = body["results"]
    assert [r["entity_id"] for r in results] == ["3", "3", "2", "404404", "42"]
    assert results[0]["feature_value"] == "2024-05-01T09:00:00.250000" and results[0]["success"] is True
    assert results[1]["success"] is False and "payment_type" in results[1]["error"]
    assert results[2]["feature_value"] == 2
    assert results[3] == {"feature_type": "payment_type", "entity_id": "404404", "feature_value": None,
                          "success": False, "error": results[3]["error"]}
    assert results[4]["feature_value"] == 1


def test_training_computes_misses_with_one_query_per_feature(client, warehouse_queries):
    items = [{"feature_type": ft, "entity_id": eid} for ft, values in EXPECTED.items() for eid in values]
    body = client.post(f"{BASE}/training", json={"features": items}).get_json()
    assert body["total_successful"] == len(items)
    assert [r["feature_value"] for r in body["results"]] == [v for values in EXPECTED.values() for v in values.values()]
    assert len(warehouse_queries) == len(EXPECTED)
    warehouse_queries.clear()
    assert client.post(f"{BASE}/training", json={"features": items}).get_json() == body
    assert warehouse_queries == []  # all cached now


@pytest.mark.parametrize("body, named", [
    ({}, "features"), ({"features": "x"}, "features"), ({"features": [1]}, "features[0]"),
    ({"features": [{"feature_type": "payment_type", "entity_id": "1"}, {"feature_type": "payment_type"}]},
     "features[1].entity_id"),
    ({"features": [{"feature_type": "payment_type", "entity_id": False}]}, "features[0].entity_id"),
    ({"features": [{"feature_type": None, "entity_id": "1"}]}, "features[0].feature_type"),
])
def test_a_malformed_training_request_is_400_naming_the_item(client, body, named):
    response = client.post(f"{BASE}/training", json=body)
    assert response.status_code == 400
    assert response.get_json()["success"] is False
    assert response.get_json()["error"].startswith(named)


def test_an_empty_training_request_answers_nothing(client):
    body = client.post(f"{BASE}/training", json={"features": []}).get_json()
    assert body == {"results": [], "total_requested": 0, "total_successful": 0}


def test_training_over_the_size_limit_is_413(client):
    items = [{"feature_type": "payment_type", "entity_id": str(i)} for i in range(10_001)]
    response = client.post(f"{BASE}/training", json={"features": items})
    assert response.status_code == 413
    assert "10000" in response.get_json()["error"]
    at_limit = client.post(f"{BASE}/training", json={"features": items[:10_000]})
    assert at_limit.status_code == 200 and at_limit.get_json()["total_requested"] == 10_000


# --- extract ------------------------------------------------------------------------------------

def test_extract_waits_and_answers_with_the_seed_body(client, fake_redis):
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 200
    body = response.get_json()
    assert body["message"] == "Feature extraction completed successfully"
    assert body["features_extracted"] == {ft: len(values) for ft, values in EXPECTED.items()}
    assert body["total_features"] == sum(len(v) for v in EXPECTED.values())
    assert body["job_id"].startswith("extract-")
    for feature_type, values in EXPECTED.items():
        for entity_id in values:
            stored = fake_redis.hgetall(f"{feature_type}:{entity_id}")
            assert set(stored) == {b"value", b"computed_at", b"version"}
            assert stored[b"version"].decode() == fingerprint(REGISTRY.get(feature_type))


def test_extract_without_waiting_is_202_and_the_job_can_be_followed(client):
    response = client.post(f"{BASE}/extract?wait=false")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status_url"] == f"http://localhost{BASE}/extract/{body['job_id']}"
    assert response.headers["Location"].endswith(body["status_url"])
    status = client.get(body["status_url"])
    assert status.status_code == 200
    run = status.get_json()
    assert run["status"] == "finished" and run["job_id"] == body["job_id"]
    assert run["result"]["total_features"] == sum(len(v) for v in EXPECTED.values())
    assert ISO.match(run["enqueued_at"]) and ISO.match(run["ended_at"])


@pytest.mark.parametrize("job_id", ["extract-0000", "nope", "rq:job:x", "*", "extract-" + "a" * 200])
def test_an_unknown_job_is_404(client, job_id):
    response = client.get(f"{BASE}/extract/{job_id}")
    assert response.status_code == 404 and response.get_json()["success"] is False


def test_a_bad_wait_parameter_is_400(client):
    assert client.post(f"{BASE}/extract?wait=maybe").status_code == 400


def test_a_full_extraction_removes_values_of_entities_that_no_longer_exist(client, fake_redis, scenario_sqlite):
    assert client.post(f"{BASE}/extract").status_code == 200
    assert fake_redis.exists("payment_type:4001", "quote_creation_to_binding_time:41") == 2
    scenario.execute(scenario_sqlite, "DELETE FROM payment_transactions WHERE id = 4001")
    scenario.execute(scenario_sqlite, "DELETE FROM quotes WHERE id = 41")
    body = client.post(f"{BASE}/extract").get_json()
    assert body["features_extracted"]["payment_type"] == len(EXPECTED["payment_type"]) - 1
    assert fake_redis.exists("payment_type:4001", "quote_creation_to_binding_time:41") == 0
    assert fake_redis.exists("payment_type:4000", "quote_creation_to_binding_time:40") == 2
    assert infer(client, "payment_type", "4001").status_code == 404


def test_extraction_reads_the_warehouse_as_it_is_now(client, scenario_sqlite):
    client.post(f"{BASE}/extract")
    scenario.execute(scenario_sqlite, "UPDATE payment_transactions SET status = 'failed' WHERE id = 7000")
    client.post(f"{BASE}/extract")
    assert infer(client, "user_failed_transaction_count", "7").get_json()["feature_value"] == 1
    assert infer(client, "user_policy_time_of_purchase", "7").get_json()["feature_value"] is None


def test_a_failed_extraction_is_5xx_and_leaves_the_previous_values_served(client, fake_redis, scenario_sqlite):
    client.post(f"{BASE}/extract")
    before = {k: fake_redis.hgetall(k) for k in fake_redis.keys("payment_type:*")}
    scenario.execute(scenario_sqlite, "DROP TABLE payment_transactions")
    response = client.post(f"{BASE}/extract")
    assert 500 <= response.status_code < 600
    body = response.get_json()
    assert body["success"] is False and body["job_id"].startswith("extract-")
    assert "warehouse" in body["error"] and "Traceback" not in body["error"]
    assert {k: fake_redis.hgetall(k) for k in fake_redis.keys("payment_type:*")} == before
    assert infer(client, "payment_type", "2000").get_json()["feature_value"] == "Credit"
    status = client.get(f"{BASE}/extract/{body['job_id']}").get_json()
    assert status["status"] == "failed" and status["error"] == body["error"]


# --- every answer is JSON -------------------------------------------------------------------------

def test_unknown_paths_and_methods_are_json(client):
    for response, status in [(client.get("/nope"), 404), (client.get(f"{BASE}/inference"), 405),
                             (client.delete(f"{BASE}/discovery"), 405)]:
        assert response.status_code == status and response.is_json
        assert response.get_json()["success"] is False


def test_oversized_bodies_are_413_json(client):
    response = client.post(f"{BASE}/training", data=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                           content_type="application/json")
    assert response.status_code == 413 and response.get_json()["success"] is False


@pytest.mark.parametrize("path", ["inference", "training"])
def test_a_chunked_body_is_read_up_to_the_limit_and_refused_beyond_it(client, path):
    # Without Content-Length (Transfer-Encoding: chunked) the size is only known by reading.
    def chunked(body: bytes):
        return client.post(f"{BASE}/{path}", input_stream=io.BytesIO(body), content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})

    item = {"feature_type": "payment_type", "entity_id": "3010"}
    small = json.dumps(item if path == "inference" else {"features": [item]}).encode()
    assert chunked(small).status_code == 200
    padded = small[:-1] + b" " * (2 * 1024 * 1024) + b"}"  # valid JSON, over 2 MiB
    response = chunked(padded)
    assert response.status_code == 413 and response.get_json()["success"] is False


def test_an_internal_error_is_500_json_without_a_traceback(embedded_app, client, monkeypatch):
    def broken(requests):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(embedded_app.extensions["feature_store"].server, "lookup", broken)
    response = infer(client, "payment_type", "1")
    assert response.status_code == 500
    assert response.get_json()["success"] is False
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)


def test_the_openapi_document_describes_every_endpoint(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert {f"{BASE}/discovery", f"{BASE}/inference", f"{BASE}/training", f"{BASE}/extract",
            f"{BASE}/extract/{{job_id}}"} <= set(document["paths"])
    assert "FeatureRequest" in document["components"]["schemas"]


# --- robustness: what other writers leave in the warehouse and in Redis --------------------------

def test_a_warehouse_row_the_feature_cannot_read_is_a_clear_502_and_extraction_writes_none_of_that_feature(
        client, fake_redis, scenario_sqlite):
    scenario.execute(scenario_sqlite, "INSERT INTO quotes VALUES (93, 4, 1, '2024-03-01 08:00:00', 'soon')")
    response = infer(client, "quote_creation_to_binding_time", "93")
    assert response.status_code == 502
    assert "quote_creation_to_binding_time" in response.get_json()["error"]
    assert infer(client, "quote_creation_to_binding_time", "42").get_json()["feature_value"] == 1  # others fine
    fake_redis.flushall()
    response = client.post(f"{BASE}/extract")
    body = response.get_json()
    assert response.status_code == 500 and "cannot be read" in body["error"]
    assert list(body["failed_features"]) == ["quote_creation_to_binding_time"]
    written = {k.split(b":")[0] for k in fake_redis.keys("*") if not k.startswith((b"rq:", b"feature-store:"))}
    assert written == {f.encode() for f in EXPECTED} - {b"quote_creation_to_binding_time"}


@pytest.mark.parametrize("stored", [
    {"value": b"Credit", "computed_at": b"1"},                         # value not JSON
    {"value": b'"Debit"', "computed_at": b"2025-01-20T12:00:00"},      # computed_at not ours
    {"value": b'"Debit"'},                                             # half a hash
])
def test_a_hash_not_in_the_layout_is_recomputed_not_served(client, fake_redis, stored):
    fake_redis.hset("payment_type:2000", mapping=stored)
    response = infer(client, "payment_type", "2000")
    assert response.status_code == 200 and response.get_json()["feature_value"] == "Credit"
    assert int(fake_redis.hget("payment_type:2000", "computed_at")) > 1


def test_input_that_is_not_unicode_is_answered_with_json(client):
    for body in [b'{"feature_type": "\\ud800", "entity_id": "1"}',
                 b'{"feature_type": "payment_type", "entity_id": "\\udfff"}',
                 b'{"features": [{"feature_type": "\\ud800", "entity_id": "\\ud800"}]}']:
        path = "training" if b"features" in body else "inference"
        response = client.post(f"{BASE}/{path}", data=body, content_type="application/json")
        assert response.status_code in (200, 404) and response.is_json


def test_options_answers_json(client):
    response = client.options(f"{BASE}/inference")
    assert response.is_json and "POST" in response.get_json()["allowed_methods"]


def test_the_inference_fast_path_and_the_flask_view_answer_alike(embedded_app, client):
    """Well-formed requests are answered by the WSGI fast path, the rest by the Flask view; the
    same lookup must give the same body either way."""
    from feature_store.api import bodies
    from feature_store.api.fast import FastInference

    assert isinstance(embedded_app.wsgi_app, FastInference)
    flask_only = embedded_app.wsgi_app.flask
    for item in [{"feature_type": "payment_type", "entity_id": "3010"},
                 {"feature_type": "user_policy_time_of_purchase", "entity_id": 3},
                 {"feature_type": "payment_type", "entity_id": "404"},
                 {"feature_type": "nope", "entity_id": "1"}]:
        fast = client.post(f"{BASE}/inference", json=item, headers={"X-Request-ID": "same"})
        embedded_app.wsgi_app = flask_only
        try:
            slow = client.post(f"{BASE}/inference", json=item, headers={"X-Request-ID": "same"})
        finally:
            embedded_app.wsgi_app = FastInference(embedded_app)
        assert (fast.status_code, fast.get_json()) == (slow.status_code, slow.get_json())
        assert fast.headers["Content-Type"] == slow.headers["Content-Type"] == "application/json"
        assert fast.headers["X-Request-ID"] and slow.headers["X-Request-ID"]
    assert bodies.simple_item({"feature_type": "x", "entity_id": True}) is None


@pytest.mark.parametrize("raw, entity_id", [(b"9007199254740993", "9007199254740993"),
                                             (b"18446744073709551616", "18446744073709551616"),
                                             (b"-9223372036854775809", "-9223372036854775809"),
                                             (b"1" + b"0" * 40, "1" + "0" * 40)])
def test_huge_integer_ids_never_pass_through_a_float(client, raw, entity_id):
    body = b'{"feature_type": "user_failed_transaction_count", "entity_id": ' + raw + b"}"
    response = client.post(f"{BASE}/inference", data=body, content_type="application/json")
    assert response.get_json()["entity_id"] == entity_id
    assert response.status_code == (200 if entity_id == str(scenario.BIG) else 404)


@pytest.mark.parametrize("path", ["inference", "training"])
def test_a_body_that_is_not_json_is_told_apart_from_json_of_the_wrong_shape(client, path):
    broken = client.post(f"{BASE}/{path}", data=b'{"feature_type": ', content_type="application/json")
    assert broken.status_code == 400 and "not valid JSON" in broken.get_json()["error"]
    shaped = client.post(f"{BASE}/{path}", data=b"[1, 2]", content_type="application/json")
    assert shaped.status_code == 400 and "not valid JSON" not in shaped.get_json()["error"]
