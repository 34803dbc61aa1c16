"""Statistics and drift of real extraction runs (a real Redis and rq worker, SQLite and
PostgreSQL): each run's statistics are those of the rows in the warehouse, a run over shifted
distributions is flagged as drifted and one over the same values reshuffled is not, partitions
merge into the whole table's figures, the history is bounded, and /metrics shows the drift."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest

from feature_store import create_app
from tests import scenario
from tests.integration.test_metrics import sample

BASE = "/api/v1/features"
START = datetime(2024, 3, 1)
TYPES = ["Credit", "Debit", "Prepaid"]


def attributes(users: int, seed: int, *, shifted: bool = False, shuffled: bool = False) -> dict[str, list]:
    """Per user: binding seconds (None: not bound), failed payments, purchase time (None: no
    success); and each payment's type. Every list drawn from its own stream, so shifting one
    leaves the others as they were; `shuffled` deals the same values to other entities."""
    binding_rng, failed_rng, purchase_rng, type_rng = (random.Random(seed * 10 + i) for i in range(4))
    binding = [binding_rng.randint(60, 3600) if binding_rng.random() > 0.15 else None for _ in range(users)]
    failed = [failed_rng.choice([0, 0, 0, 1, 1, 2]) for _ in range(users)]
    purchase = [START + timedelta(seconds=purchase_rng.randint(0, 30 * 86400)) if purchase_rng.random() > 0.2
                else None for _ in range(users)]
    if shifted:
        binding = [None if b is None else b * 10 + 5000 for b in binding]
        failed = [f + 2 for f in failed]
    if shuffled:
        for values in (binding, failed, purchase):
            random.Random(seed + 99).shuffle(values)
    payments = sum(failed) + sum(p is not None for p in purchase)
    types = [type_rng.choices(TYPES, [5, 3, 2])[0] for _ in range(payments)]
    if shuffled:
        random.Random(seed + 98).shuffle(types)
    return {"binding": binding, "failed": failed, "purchase": purchase, "types": types}


def load(url: str, data: dict[str, list]) -> dict[str, list]:
    """Write the warehouse of `data` (every user has a quote and a policy); returns each feature's
    expected values, computed from `data` alone."""
    users, quotes, policies, payments = [], [], [], []
    types = iter(data["types"])
    rows = zip(data["binding"], data["failed"], data["purchase"], strict=True)
    for i, (binding, failed, purchase) in enumerate(rows, 1):
        created = START + timedelta(hours=i)
        users.append((i, f"user{i}@example.com", created))
        quotes.append((1000 + i, i, 1000, created, None if binding is None else created + timedelta(seconds=binding)))
        policies.append((2000 + i, i, 1000 + i, "active", created))
        for n in range(failed):
            payments.append((len(payments) + 1, 2000 + i, 500, next(types), "failed", created + timedelta(days=n)))
        if purchase is not None:
            payments.append((len(payments) + 1, 2000 + i, 500, next(types), "succeeded", purchase))
    scenario.load_rows(url, {"users": users, "quotes": quotes, "policies": policies,
                             "payment_transactions": payments})
    return {"quote_creation_to_binding_time": data["binding"], "user_failed_transaction_count": data["failed"],
            "user_policy_time_of_purchase": data["purchase"], "payment_type": data["types"]}


def statistics(client, feature_type: str) -> dict:
    response = client.get(f"{BASE}/statistics/{feature_type}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def extract(client) -> dict:
    response = client.post(f"{BASE}/extract")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def plain_quantile(values: list, rank: float):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank * len(ordered)) - 1)]


def plain_psi(before: list, after: list, edges: list) -> float:
    """PSI as the README defines it, over every value (nulls a bin), straight from the values."""
    def shares(values):
        bounds = [None, *edges, None]
        present = [v for v in values if v is not None]
        bins = [sum(1 for v in present if (lo is None or v > lo) and (hi is None or v <= hi))
                for lo, hi in zip(bounds, bounds[1:], strict=False)]
        return [(len(values) - len(present)) / len(values)] + [n / len(values) for n in bins]
    return sum((max(a, 1e-4) - max(b, 1e-4)) * math.log(max(a, 1e-4) / max(b, 1e-4))
               for b, a in zip(shares(before), shares(after), strict=True))


@pytest.fixture
def make_client(redis_url, make_app):
    return lambda url: make_app(REDIS_URL=redis_url, WAREHOUSE_URL=url).test_client()


def test_a_run_records_the_statistics_of_the_rows(warehouse_url, make_client, start_worker):
    expected = load(warehouse_url, attributes(150, seed=1))  # under KLL's k: quantiles are exact
    start_worker(warehouse_url)
    client = make_client(warehouse_url)
    answer = extract(client)
    assert answer["drifted_features"] == []
    result = client.get(f"{BASE}/extract/{answer['job_id']}").get_json()["result"]
    for feature_type, values in expected.items():
        body = statistics(client, feature_type)
        latest, present = body["latest"], [v for v in values if v is not None]
        assert body["history"] == [latest] and latest["job_id"] == answer["job_id"] and latest["drift"] is None
        assert (latest["count"], latest["nulls"]) == (len(values), len(values) - len(present)), feature_type
        assert result["statistics"][feature_type] == {"count": len(values), "nulls": len(values) - len(present),
                                                      "distinct": latest["distinct"], "psi": None, "ks": None,
                                                      "drifted": False}
        assert latest["distinct"] == pytest.approx(len(set(present)), abs=max(2, 0.02 * len(set(present))))
        if feature_type == "payment_type":
            counts = sorted(((present.count(t), t) for t in set(present)), reverse=True)
            assert latest["top_values"] == [{"value": t, "count": n} for n, t in counts]
            continue
        assert (latest["min"], latest["max"]) == (iso(min(present)), iso(max(present))), feature_type
        assert latest["quantiles"]["p50"] == iso(plain_quantile(present, 0.5)), feature_type
        if feature_type == "user_policy_time_of_purchase":
            mean = START + sum((p - START for p in present), timedelta()) / len(present)
            assert abs(datetime.fromisoformat(latest["mean"]) - mean) <= timedelta(microseconds=1)
        else:
            assert latest["mean"] == sum(present) / len(present)


def test_shifted_distributions_drift_and_reshuffled_ones_do_not(warehouse_url, make_client, start_worker):
    before = load(warehouse_url, attributes(150, seed=2))
    start_worker(warehouse_url)
    client = make_client(warehouse_url)
    first = extract(client)
    load(warehouse_url, attributes(150, seed=2, shuffled=True))
    reshuffled = extract(client)
    assert reshuffled["drifted_features"] == []
    for feature_type in before:
        drift = statistics(client, feature_type)["latest"]["drift"]
        assert drift["psi"] == pytest.approx(0, abs=1e-6) and drift["previous_job_id"] == first["job_id"]
        assert drift["ks"] in (0, None) and not drift["drifted"]

    after = load(warehouse_url, attributes(150, seed=2, shifted=True))
    shifted = extract(client)
    assert sorted(shifted["drifted_features"]) == ["quote_creation_to_binding_time", "user_failed_transaction_count"]
    status = client.get(f"{BASE}/extract/{shifted['job_id']}").get_json()
    assert status["result"]["drifted_features"] == shifted["drifted_features"]
    for feature_type in ("quote_creation_to_binding_time", "user_failed_transaction_count"):
        history = statistics(client, feature_type)["history"]
        assert [entry["job_id"] for entry in history] == [shifted["job_id"], reshuffled["job_id"], first["job_id"]]
        present = [v for v in before[feature_type] if v is not None]
        edges = sorted({plain_quantile(present, r / 10) for r in range(1, 10)})
        expected = plain_psi(before[feature_type], after[feature_type], edges)
        assert history[0]["drift"]["psi"] == pytest.approx(expected, abs=1e-5) and expected > 0.2
        assert status["result"]["statistics"][feature_type]["psi"] == history[0]["drift"]["psi"]
        assert history[0]["drift"]["ks"] >= 0.4 and history[0]["drift"]["drifted"]

    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "feature_store_feature_drifted", feature_type="quote_creation_to_binding_time") == 1
    assert sample(text, "feature_store_feature_drifted", feature_type="payment_type") == 0
    assert sample(text, "feature_store_feature_drift_psi", feature_type="user_failed_transaction_count") == \
        pytest.approx(statistics(client, "user_failed_transaction_count")["latest"]["drift"]["psi"])
    overview = client.get(f"{BASE}/statistics").get_json()
    assert sorted(overview["drifted_features"]) == sorted(shifted["drifted_features"])


def test_a_partitioned_run_merges_into_the_whole_tables_statistics(sqlite_url, make_client, start_worker):
    expected = load(sqlite_url, attributes(3000, seed=3))  # beyond k: the sketches estimate
    for _ in range(2):
        start_worker(sqlite_url, env={"EXTRACT_PARTITIONS": "3", "EXTRACT_CHUNK_SIZE": "400"})
    client = make_client(sqlite_url)
    answer = extract(client)
    assert client.get(f"{BASE}/extract/{answer['job_id']}").get_json()["result"]["partitions"] == 3
    for feature_type, values in expected.items():
        latest, present = statistics(client, feature_type)["latest"], [v for v in values if v is not None]
        assert (latest["count"], latest["nulls"]) == (len(values), len(values) - len(present)), feature_type
        assert latest["distinct"] == pytest.approx(len(set(present)), rel=0.05), feature_type
        if feature_type == "payment_type":
            assert {t["value"]: t["count"] for t in latest["top_values"]} == {t: present.count(t) for t in TYPES}
            continue
        assert (latest["min"], latest["max"]) == (iso(min(present)), iso(max(present))), feature_type
        ranked = sorted(present)
        for name, q in latest["quantiles"].items():
            value = datetime.fromisoformat(q) if isinstance(ranked[0], datetime) else q
            rank = sum(1 for v in ranked if v <= value) / len(ranked)
            assert rank >= int(name[1:]) / 100 - 0.025, (feature_type, name)


def test_the_history_is_bounded_and_statistics_can_be_off(sqlite_url, make_client, start_worker, redis_url):
    load(sqlite_url, attributes(50, seed=4))
    worker = start_worker(sqlite_url, env={"STATISTICS_HISTORY": "2"})
    client = make_client(sqlite_url)
    jobs = [extract(client)["job_id"] for _ in range(3)]
    body = statistics(client, "payment_type")
    assert [entry["job_id"] for entry in body["history"]] == jobs[:0:-1]
    assert [entry["job_id"] for entry in client.get(f"{BASE}/statistics/payment_type?limit=1").get_json()
            ["history"]] == [jobs[-1]]
    assert client.get(f"{BASE}/statistics/payment_type?limit=0").status_code == 400
    unknown = client.get(f"{BASE}/statistics/nope")
    assert unknown.status_code == 404 and "payment_type" in unknown.get_json()["known_feature_types"]

    worker.stop()
    start_worker(sqlite_url, env={"STATISTICS": "0"})
    answer = extract(client)
    assert answer["drifted_features"] == []
    assert "statistics" not in client.get(f"{BASE}/extract/{answer['job_id']}").get_json()["result"]
    assert statistics(client, "payment_type")["latest"]["job_id"] == jobs[-1]


def test_statistics_before_any_run(sqlite_url, redis_url):
    scenario.load_scenario(sqlite_url)
    app = create_app({"REDIS_URL": redis_url, "WAREHOUSE_URL": sqlite_url})
    try:
        body = app.test_client().get(f"{BASE}/statistics/payment_type").get_json()
        assert body == {"feature_type": "payment_type", "data_type": "string", "latest": None, "history": []}
    finally:
        app.extensions["feature_store"].close()


def test_statistics_live_on_a_redis_cluster(make_app, redis_cluster_url, redis_url, sqlite_url, start_worker):
    load(sqlite_url, attributes(80, seed=5))
    env = {"REDIS_URL": redis_cluster_url, "REDIS_CLUSTER": "1", "RQ_REDIS_URL": redis_url}
    start_worker(sqlite_url, env={**env, "EXTRACT_PARTITIONS": "2"})
    client = make_app(REDIS_URL=redis_cluster_url, REDIS_CLUSTER=True, RQ_REDIS_URL=redis_url,
                      WAREHOUSE_URL=sqlite_url).test_client()
    jobs = [extract(client)["job_id"] for _ in range(2)]
    for feature_type in ("payment_type", "quote_creation_to_binding_time"):
        history = statistics(client, feature_type)["history"]
        assert [entry["job_id"] for entry in history] == jobs[::-1]
        assert history[0]["drift"]["psi"] == pytest.approx(0, abs=1e-6)
    assert sample(client.get("/metrics").get_data(as_text=True), "feature_store_feature_drifted",
                  feature_type="payment_type") == 0
