"""As-of indexes (services/as_of_index.py): a training set's values read from each feature's
history instead of its statements, on SQLite and PostgreSQL. The index must answer exactly what
the as-of statement answers (values computed independently from the rows at every instant of a
warehouse with a history; a property test against the statements on a larger random warehouse),
retire itself at any commit, and be shared by the web processes through Redis."""

from __future__ import annotations

import csv
import io
import random
from datetime import datetime, timedelta

import fakeredis
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from feature_store.features import REGISTRY
from feature_store.services import as_of_index
from feature_store.services.as_of_index import AsOfIndexes, build, microseconds
from feature_store.warehouse import Warehouse, demo
from tests import history

BASE = "/api/v1/features"
FEATURES = [REGISTRY.get(ft) for ft in REGISTRY.feature_types()]


def lookup(index, ids: list[int | None], moments: list[datetime]) -> list[bytes | None]:
    values, hit = index.lookup(np.array([i or 0 for i in ids], dtype=np.int64),
                               np.array([i is not None for i in ids]), np.array([microseconds(m) for m in moments]))
    assert hit.tolist() == [v is not None for v in values]
    return values


def test_every_indexed_value_at_every_instant_matches_the_rows(history_url):
    """The index of each feature, at every instant where a row appears or an event happens (and a
    microsecond either side), equals the values computed from the rows in plain Python."""
    warehouse = Warehouse(history_url)
    try:
        entities = history.entities()
        for feature in FEATURES:
            index = build(warehouse, feature, b"marker")
            ids, moments, expected = [], [], []
            for moment in history.instants():
                at = history.values_at(moment)[feature.feature_type]
                for entity_id in [*entities[feature.feature_type], "999999"]:
                    ids.append(int(entity_id))
                    moments.append(moment)
                    expected.append(at[entity_id] if entity_id in at else "did not exist")
            got = [("did not exist" if v is None else orjson.loads(v)) for v in lookup(index, ids, moments)]
            assert got == expected, feature.feature_type
    finally:
        warehouse.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def random_warehouse(request, tmp_path_factory):
    """A demo warehouse of 300 users (random rows), on each dialect."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('index') / 'demo.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
    demo.generate(url, users=300, seed=11, replace=True)
    warehouse = Warehouse(url)
    yield warehouse, {f.feature_type: build(warehouse, f, b"marker") for f in FEATURES}
    warehouse.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), exact=st.floats(0, 1))
def test_the_index_answers_what_the_as_of_statement_answers(random_warehouse, seed, exact):
    """Random spines (ids that exist or not, instants at, around and between the rows' own) give
    the same value and existence from the index as from the feature's as-of statement."""
    warehouse, indexes = random_warehouse
    rng = random.Random(seed)
    for feature in FEATURES:
        index = indexes[feature.feature_type]
        instants = index.instants.tolist()
        ids, moments = [], []
        for _ in range(200):
            ids.append(rng.choice([*index.entity_ids.tolist()[:50], 0, -1, 10**6, 2**63 - 1])
                       if rng.random() < 0.1 else int(rng.choice(index.entity_ids)))
            us = rng.choice(instants) + (rng.choice([-1, 0, 0, 1]) if rng.random() < exact
                                         else rng.randint(-10**12, 10**12))
            moments.append(datetime(1970, 1, 1) + timedelta(microseconds=us))
        spine = [(pos, i, m) for pos, (i, m) in enumerate(zip(ids, moments, strict=True))]
        expected = warehouse.batch_as_of(feature, spine)
        assert lookup(index, ids, moments) == [expected.get(pos) for pos in range(len(ids))], feature.feature_type


def test_an_index_round_trips_through_redis_bytes(random_warehouse):
    warehouse, indexes = random_warehouse
    for feature_type, index in indexes.items():
        again = as_of_index.loads(feature_type, index.marker, as_of_index.dumps(index), index.seconds)
        for name in ("entity_ids", "keys", "ranks", "instants"):
            assert getattr(again, name).tolist() == getattr(index, name).tolist()
        assert again.values.tolist() == index.values.tolist()


def test_a_sparse_id_range_is_searched_not_tabled(random_warehouse):
    """Ids far apart (no direct table) are looked up by binary search, with the same answers."""
    _, indexes = random_warehouse
    index = indexes["user_failed_transaction_count"]
    spread = as_of_index.AsOfIndex(index.feature_type, index.marker, index.entity_ids * 1_000_003, index.keys,
                                   index.ranks, index.instants, index.values, index.seconds)
    assert index.rank_table is not None and spread.rank_table is None
    ids = index.entity_ids.tolist()[:40]
    moments = [datetime(2030, 1, 1)] * len(ids)
    assert lookup(spread, [i * 1_000_003 for i in ids], moments) == lookup(index, ids, moments)
    assert lookup(spread, [ids[0], 7], moments[:2]) == [None, None]


def _insert_user(url: str, user_id: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, created_at) VALUES (:i, :e, :c)"),
                     {"i": user_id, "e": f"u{user_id}@example.com", "c": datetime(2024, 1, 1)})
    engine.dispose()


def test_any_commit_retires_the_indexes_and_postgresql_shares_them(history_url):
    """On PostgreSQL, built by one process and read from Redis by another without building (on
    SQLite, whose marker counts per connection, each builds its own); any commit to the
    warehouse retires them (both then run statements)."""
    redis = fakeredis.FakeRedis()
    features = [REGISTRY.get("user_failed_transaction_count")]
    first, second = (AsOfIndexes(Warehouse(history_url), redis) for _ in range(2))
    try:
        for _ in range(20):  # PostgreSQL: anything written to the cluster's WAL meanwhile discards a build
            if first.build_now(features) and first.current(features):
                break
        if history_url.startswith("postgresql"):
            assert list(second.current(features)) == ["user_failed_transaction_count"]
            assert second.describe()["user_failed_transaction_count"]["instants"] > 0
        else:
            assert second.current(features) == {} and redis.keys("feature-store:as-of-index:*") == []
            assert second.build_now(features) and list(second.current(features)) == ["user_failed_transaction_count"]
        _insert_user(history_url, 77)
        assert first.current(features) == {} and second.current(features) == {}
    finally:
        first.warehouse.dispose()
        second.warehouse.dispose()


def spine_body(rows: list[tuple[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user_id", "as_of"])
    writer.writerows(rows)
    return out.getvalue().encode()


def test_training_sets_use_the_index_once_built_and_not_after_a_commit(tmp_path, make_app, redis_url, monkeypatch):
    """Over HTTP (SQLite, whose data_version is exact): a training set long enough builds the
    index after it is answered; the next one is read from it, equal to the statements' table;
    after a commit the next one runs statements again and sees the new row."""
    monkeypatch.setattr(as_of_index, "BUILD_MIN_ROWS", 10)
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history.load(url)
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=url, EXTRACT_ON_START=False)
    client = app.test_client()
    moments = history.instants()
    rows = [(str(user), moment.isoformat()) for user in (10, 11, 12, 13) for moment in moments]
    body = spine_body(rows)

    def post():
        response = client.post(f"{BASE}/training-sets?feature_set=underwriting_v1&format=csv", data=body,
                               content_type="text/csv")
        assert response.status_code == 200
        return response.headers["X-As-Of-Indexed"], response.get_data()

    indexed, by_statements = post()
    assert indexed == ""
    services = app.extensions["feature_store"]
    builder = services.as_of_indexes._builder
    assert builder is not None
    builder.join(30)
    indexed, by_index = post()
    assert indexed == "user_policy_time_of_purchase,user_failed_transaction_count"
    assert by_index == by_statements
    _insert_user(url, 13)
    indexed, after = post()
    assert indexed == ""
    assert after != by_statements and b"\n13,2024-01-01T00:00:00,true,,0\n" in after


def test_a_sqlite_file_put_in_the_warehouses_place_retires_its_indexes(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history.load(url)
    warehouse = Warehouse(url)
    try:
        marker = warehouse.change_marker()
        assert marker is not None and warehouse.change_marker() == marker
        (tmp_path / "history.db").rename(tmp_path / "old.db")
        history.load(url)  # a new file at the same path
        assert warehouse.change_marker() is None
    finally:
        warehouse.dispose()


def test_a_build_the_warehouse_changed_under_is_discarded_and_not_retried_at_once(tmp_path):
    """A commit between the marker's readings around a build: nothing is kept, and the next
    training set does not start another build before `retry_after`."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history.load(url)
    warehouse = Warehouse(url)
    indexes = AsOfIndexes(warehouse, fakeredis.FakeRedis(), retry_after=3600)
    features = [REGISTRY.get("user_failed_transaction_count")]
    real_build = as_of_index.build

    def build_then_commit(*args):
        index = real_build(*args)
        _insert_user(url, 78)  # while the index was being built
        return index

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(as_of_index, "build", build_then_commit)
            assert indexes.build_now(features) == {}
        assert indexes.current(features) == {} and indexes.describe() == {}
        indexes.build_missing(features, rows=as_of_index.BUILD_MIN_ROWS)
        assert indexes._builder is None  # backed off: no thread started
    finally:
        warehouse.dispose()
