"""The parity check: stored values against the as-of path at their own computed_at, by
endpoint and by command, with exit codes scripts can rely on."""

from __future__ import annotations

from feature_store.cli import features
from tests import scenario

BASE = "/api/v1/features"


def test_a_store_fresh_from_extraction_agrees_everywhere(client):
    client.post(f"{BASE}/extract")
    report = client.get(f"{BASE}/parity?sample=1000").get_json()
    for feature_type, expected in scenario.expected_values().items():
        result = report["features"][feature_type]
        assert result == {"checked": len(expected), "agree": len(expected), "disagree": 0, "agreement": 1.0,
                          "disagreements": []}
    assert report["window_seconds"] == 60


def test_a_value_read_just_after_its_computed_at_second_is_not_a_disagreement(client, scenario_sqlite):
    # computed_at has whole seconds: an entity created within its second (after it), computed on
    # demand, is in the stored value but not as of the computed_at itself.
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(seconds=0.5)).replace(tzinfo=None).isoformat(sep=" ")
    scenario.execute(scenario_sqlite, f"INSERT INTO users VALUES (99, 'new@example.com', '{soon}')")
    assert client.post(f"{BASE}/inference", json={"feature_type": "user_failed_transaction_count",
                                                  "entity_id": 99}).get_json()["success"]
    strict = client.get(f"{BASE}/parity?sample=1000&window=0").get_json()["features"]
    assert [d["entity_id"] for d in strict["user_failed_transaction_count"]["disagreements"]] == ["99"]
    assert client.get(f"{BASE}/parity?sample=1000").get_json()["features"]["user_failed_transaction_count"][
        "disagree"] == 0


def test_a_status_changed_in_place_is_found(client, scenario_sqlite):
    client.post(f"{BASE}/extract")
    # The warehouse records no time for a status change: the as-of path reads today's status.
    scenario.execute(scenario_sqlite, "UPDATE payment_transactions SET status = 'failed' WHERE id = 3011")
    report = client.get(f"{BASE}/parity?sample=1000").get_json()
    counts = report["features"]["user_failed_transaction_count"]
    assert counts["disagree"] == 1 and counts["agree"] == counts["checked"] - 1
    (finding,) = counts["disagreements"]
    assert finding["entity_id"] == "3" and finding["stored"] == "2" and finding["as_of_value"] == "3"
    # 3011 was not user 3's earliest succeeded payment: the purchase time still agrees.
    assert report["features"]["user_policy_time_of_purchase"]["disagree"] == 0
    assert report["features"]["payment_type"]["disagree"] == 0


def test_the_command_reports_and_exits_by_the_finding(embedded_app, client, scenario_sqlite):
    runner = embedded_app.test_cli_runner()
    assert runner.invoke(features, ["parity"]).output.count("n/a (no stored values)") == 4
    client.post(f"{BASE}/extract")
    ok = runner.invoke(features, ["parity", "--sample", "50"])
    assert ok.exit_code == 0 and "payment_type: 15/15 agree (100.00%)" in ok.output
    scenario.execute(scenario_sqlite, "UPDATE payment_transactions SET status = 'failed' WHERE id = 3011")
    found = runner.invoke(features, ["parity", "--feature-type", "user_failed_transaction_count"])
    assert found.exit_code == 1 and "3 at " in found.output and "stored 2, as of then 3" in found.output
    assert runner.invoke(features, ["parity", "--feature-type", "nope"]).exit_code == 2


def test_bad_parity_requests(client):
    assert client.get(f"{BASE}/parity?sample=0").status_code == 400
    assert client.get(f"{BASE}/parity?sample=x").status_code == 400
    response = client.get(f"{BASE}/parity?feature_types=nope")
    assert response.status_code == 400 and "unknown feature_type 'nope'" in response.get_json()["error"]
