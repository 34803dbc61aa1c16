"""Named feature sets: declared beside the features, listed, served for one entity in one call
(one Redis round trip), on the inference fast path and through Flask alike."""

from __future__ import annotations

import pytest

from feature_store.features import REGISTRY
from feature_store.registry import FeatureSet, Registry
from tests import scenario

BASE = "/api/v1/features"
EXPECTED = scenario.expected_values()
SET = REGISTRY.feature_set("underwriting_v1")


def test_feature_sets_are_listed_and_named_by_discovery(client):
    assert client.get(f"{BASE}/feature-sets").get_json() == [{
        "name": "underwriting_v1", "description": SET.description, "entity_type": "user_id",
        "feature_types": list(SET.feature_types), "created_at": "2026-12-01T00:00:00"}]
    catalog = {entry["feature_type"]: entry for entry in client.get(f"{BASE}/discovery").get_json()}
    assert catalog["user_failed_transaction_count"]["feature_sets"] == ["underwriting_v1"]
    assert catalog["payment_type"]["feature_sets"] == []


@pytest.mark.parametrize("entity_id", ["3", 3])
def test_a_feature_set_is_served_for_one_entity(client, fake_redis, entity_id):
    client.post(f"{BASE}/extract")
    body = client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": entity_id}).get_json()
    assert body["success"] is True and body["entity_id"] == "3" and body["entity_type"] == "user_id"
    assert list(body["values"]) == list(SET.feature_types)
    for feature_type, answer in body["values"].items():
        assert answer["feature_value"] == EXPECTED[feature_type]["3"]
        single = client.post(f"{BASE}/inference", json={"feature_type": feature_type, "entity_id": 3}).get_json()
        assert answer == {"feature_value": single["feature_value"], "computed_at": single["computed_at"],
                          "age_seconds": answer["age_seconds"], "stale": False}
        assert 0 <= answer["age_seconds"] <= single["age_seconds"]


def test_a_missing_value_is_computed_on_demand(client, fake_redis):
    body = client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": 2}).get_json()
    assert body["values"]["user_failed_transaction_count"]["feature_value"] == 2
    assert fake_redis.exists("user_failed_transaction_count:2")


def test_one_redis_round_trip_for_every_value(client, embedded_app, monkeypatch):
    client.post(f"{BASE}/extract")
    store = embedded_app.extensions["feature_store"].store
    reads = []
    real = store.read
    monkeypatch.setattr(store, "read", lambda keys: reads.append(list(keys)) or real(keys))
    client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": 3})
    assert reads == [[(ft, "3") for ft in SET.feature_types]]


def test_a_feature_set_as_of_an_instant(client):
    body = client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": 3,
                                                  "as_of": "2024-05-21T00:00:00Z"}).get_json()
    assert body["as_of"] == "2024-05-21T00:00:00"
    assert body["values"]["user_failed_transaction_count"]["feature_value"] == 1
    gone = client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": 3,
                                                  "as_of": "2023-01-01"})
    assert gone.status_code == 404 and "did not exist at 2023-01-01T00:00:00" in gone.get_json()["error"]


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"feature_set": "nope", "entity_id": 1}, 404, "unknown feature_set 'nope'; known feature sets: underwriting_v1"),
    ({"feature_set": "underwriting_v1", "entity_id": 424242}, 404, "no underwriting_v1 values: entity '424242' "
                                                                   "does not exist"),
    ({"feature_set": "underwriting_v1", "entity_id": "007"}, 404, "no underwriting_v1 values: entity '007'"),
    ({"feature_set": None, "entity_id": 1}, 400, "feature_set: must be a string"),
    ({"feature_set": "underwriting_v1", "feature_type": "payment_type", "entity_id": 1}, 400,
     "give either feature_type (one value) or feature_set (its values), not both"),
    ({"feature_set": "underwriting_v1"}, 400, "entity_id: is required"),
    ({"feature_set": "underwriting_v1", "entity_id": True}, 400, "entity_id: must be a string or an integer"),
])
def test_bad_feature_set_requests(client, body, status, error):
    response = client.post(f"{BASE}/inference", json=body)
    assert response.status_code == status
    answer = response.get_json()
    assert answer["success"] is False and answer["error"].startswith(error) and answer["request_id"]


def test_the_fast_path_and_flask_answer_alike(embedded_app, client):
    client.post(f"{BASE}/extract")
    flask_only = embedded_app.wsgi_app.flask
    for body in ({"feature_set": "underwriting_v1", "entity_id": 3}, {"feature_set": "nope", "entity_id": 3},
                 {"feature_set": "underwriting_v1", "entity_id": 424242}):
        fast = client.post(f"{BASE}/inference", json=body, headers={"X-Request-ID": "same"})
        embedded_app.wsgi_app, real = flask_only, embedded_app.wsgi_app
        try:
            slow = client.post(f"{BASE}/inference", json=body, headers={"X-Request-ID": "same"})
        finally:
            embedded_app.wsgi_app = real
        assert (fast.status_code, fast.get_data()) == (slow.status_code, slow.get_data())


def test_a_feature_set_is_validated_where_it_is_declared():
    registry = Registry(list(REGISTRY))
    with pytest.raises(ValueError, match="undeclared"):
        registry.register_set(FeatureSet("s1", ("user_failed_transaction_count", "nope")))
    with pytest.raises(ValueError, match="mixes entity types"):
        registry.register_set(FeatureSet("s2", ("user_failed_transaction_count", "payment_type")))
    with pytest.raises(ValueError, match="distinct"):
        FeatureSet("s3", ("payment_type", "payment_type"))
    registry.register_set(FeatureSet("s4", ("payment_type",)))
    with pytest.raises(ValueError, match="twice"):
        registry.register_set(FeatureSet("s4", ("payment_type",)))
