"""Feature versions: a fingerprint derived from what a feature computes (never declared by hand),
a recorded history, and stored values of another version never served as current."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import date, timedelta

from sqlalchemy import and_, func

from feature_store import versions
from feature_store.features import REGISTRY
from feature_store.registry import DataType, Registry
from feature_store.versions import fingerprint, history, load_history, record, unrecorded
from feature_store.warehouse.models import PaymentTransaction, Policy, User

BASE = "/api/v1/features"
FAILED = REGISTRY.get("user_failed_transaction_count")
QUOTE = REGISTRY.get("quote_creation_to_binding_time")


def test_every_feature_definition_is_its_latest_recorded_version():
    """Fails when a feature's query or value function changed without a recorded version: run
    `flask --app wsgi features versions --record` and commit feature_store/versions.json."""
    assert unrecorded(REGISTRY) == [], (
        "these features' definitions changed without a new recorded version: run "
        "`flask --app wsgi features versions --record` and commit feature_store/versions.json")


def _counting(status: str):
    return lambda q: (
        q.select(User, func.count(PaymentTransaction.id))
        .outerjoin(Policy, q.on(Policy, Policy.user_id == User.id))
        .outerjoin(PaymentTransaction, q.on(PaymentTransaction, and_(
            PaymentTransaction.policy_id == Policy.id, PaymentTransaction.status == status)))
        .group_by(q.key(User)))


def test_the_fingerprint_follows_what_the_feature_computes():
    # The same statement written anew: the same version.
    assert fingerprint(dataclasses.replace(FAILED, query=_counting("failed"))) == fingerprint(FAILED)
    # A different constant in the statement, a different value function or data type: a new one.
    assert fingerprint(dataclasses.replace(FAILED, query=_counting("refunded"))) != fingerprint(FAILED)
    assert fingerprint(dataclasses.replace(QUOTE, value=lambda start, end: None)) != fingerprint(QUOTE)
    assert fingerprint(dataclasses.replace(FAILED, data_type=DataType.FLOAT)) != fingerprint(FAILED)
    # Metadata is not what a feature computes.
    assert fingerprint(dataclasses.replace(FAILED, description="reworded", name="Failed count",
                                           max_age=timedelta(hours=1))) == fingerprint(FAILED)


def test_the_fingerprint_is_the_same_in_every_process():
    code = ("from feature_store.features import REGISTRY; from feature_store.versions import current_versions; "
            "import json; print(json.dumps(current_versions(REGISTRY)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == versions.current_versions(REGISTRY)


def test_recording_appends_a_version_for_each_changed_definition(tmp_path):
    path = tmp_path / "versions.json"
    registry = Registry([FAILED, QUOTE])
    assert record(registry, date(2025, 1, 1), path) == [FAILED.feature_type, QUOTE.feature_type]
    assert record(registry, date(2025, 2, 1), path) == []  # nothing changed
    changed = dataclasses.replace(FAILED, query=_counting("refunded"))
    registry = Registry([changed, QUOTE])
    # Before it is recorded, the new definition is listed as the next version, not yet begun.
    assert history(changed, load_history(path)) == [
        {"version": 1, "fingerprint": fingerprint(FAILED), "began": "2025-01-01"},
        {"version": 2, "fingerprint": fingerprint(changed), "began": None}]
    assert record(registry, date(2026, 3, 4), path) == [FAILED.feature_type]
    assert history(changed, load_history(path))[-1] == {"version": 2, "fingerprint": fingerprint(changed),
                                                        "began": "2026-03-04"}


def test_a_stored_value_of_another_version_is_a_miss_and_is_recomputed(client, fake_redis):
    key = "user_failed_transaction_count:2"  # the scenario's user 2 has 2 failed payments
    fake_redis.hset(key, mapping={"value": "99", "computed_at": 2_000_000_000, "version": "0123456789ab"})
    body = client.post(f"{BASE}/inference", json={"feature_type": FAILED.feature_type, "entity_id": 2}).get_json()
    assert body["feature_value"] == 2
    assert fake_redis.hget(key, "version").decode() == fingerprint(FAILED)  # rewritten as the current one
    # A value written without a version (before versions existed) is not served either.
    fake_redis.hset(key, mapping={"value": "99", "computed_at": 2_000_000_000})
    fake_redis.hdel(key, "version")
    body = client.post(f"{BASE}/inference", json={"feature_type": FAILED.feature_type, "entity_id": 2}).get_json()
    assert body["feature_value"] == 2


def test_the_versions_command_lists_records_and_fails_while_a_change_is_unrecorded(embedded_app, tmp_path,
                                                                                   monkeypatch):
    runner = embedded_app.test_cli_runner()
    listed = runner.invoke(args=["features", "versions"])
    assert listed.exit_code == 0, listed.output
    assert f"user_failed_transaction_count: v1 {fingerprint(FAILED)} since 2025-01-01" in listed.output
    shown = runner.invoke(args=["features", "versions", "--show", "user_failed_transaction_count"])
    assert shown.exit_code == 0 and "'failed'" in shown.output and "LEFT OUTER JOIN policies" in shown.output
    assert runner.invoke(args=["features", "versions", "--show", "nope"]).exit_code == 2  # a usage error
    # A changed definition: exit 1 until recorded; --record writes the history file.
    path = tmp_path / "versions.json"
    path.write_text(versions.HISTORY_PATH.read_text())
    monkeypatch.setattr(versions, "HISTORY_PATH", path)
    changed = dataclasses.replace(FAILED, query=_counting("refunded"))
    monkeypatch.setattr(embedded_app.extensions["feature_store"], "registry", Registry([changed, QUOTE]))
    pending = runner.invoke(args=["features", "versions"])
    assert pending.exit_code == 1 and "v2" in pending.output and "UNRECORDED" in pending.output
    assert runner.invoke(args=["features", "versions", "--record"]).exit_code == 0
    assert json.loads(path.read_text())["user_failed_transaction_count"][-1]["fingerprint"] == fingerprint(changed)
    assert runner.invoke(args=["features", "versions"]).exit_code == 0
