"""Ordering: a value is never replaced by one computed from an older read of the warehouse. Each
race is forced: an extraction run (the real extract_all) or an on-demand computation reads the
warehouse, a change is committed and streamed by the real streaming process, and only then does
the older read write."""

from __future__ import annotations

import orjson
import redis

from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore, now_seconds
from feature_store.services.extraction import extract_all
from feature_store.versions import current_versions
from feature_store.warehouse import Warehouse
from tests.conftest import wait_for
from tests.integration import test_streaming
from tests.integration.test_streaming import commit, wait_equal
from tests.streaming import extract

# The streaming tests' fixtures: the streaming processes of a test, the reference extraction's Redis.
streams, scratch_url = test_streaming.streams, test_streaming.scratch_url


def _value(client: redis.Redis, name: str) -> bytes | None:
    return client.hget(name, "value")


def _run_with_a_change_before_its_writes(url: str, redis_url: str, change: str, streamed) -> dict:
    """A full extraction run whose queries all read before `change` commits; the change is
    committed and streamed (`streamed(client)` true) before the run writes anything."""
    client = redis.Redis.from_url(redis_url)
    warehouse = Warehouse(url)
    store = OnlineStore(client, versions=current_versions(REGISTRY))

    def between_read_and_write(update: dict) -> None:
        if update["phase"] == "write":
            commit(url, change)
            wait_for(lambda: streamed(client), timeout=30, what="the change to be streamed")

    try:
        return extract_all(list(REGISTRY), warehouse, store, chunk_size=1000, on_progress=between_read_and_write)
    finally:
        warehouse.dispose()
        client.close()


def test_a_run_that_read_before_a_change_keeps_the_streamed_value(logical_database, redis_url, scratch_url,
                                                                  streams):
    extract(logical_database, redis_url)
    streams(redis_url, logical_database).wait_state("streaming")
    # User 4 has no failed payment; the change makes it one (the run read 0).
    result = _run_with_a_change_before_its_writes(
        logical_database, redis_url, "UPDATE payment_transactions SET status = 'failed' WHERE id = 4000",
        lambda client: _value(client, "user_failed_transaction_count:4") == b"1")
    assert result["features_extracted"]["user_failed_transaction_count"] == 7  # the run did write its values
    client = redis.Redis.from_url(redis_url)
    assert _value(client, "user_failed_transaction_count:4") == b"1"
    client.close()
    wait_equal(logical_database, redis_url, scratch_url)


def test_a_run_that_read_before_an_insert_keeps_the_new_entitys_values(logical_database, redis_url, scratch_url,
                                                                       streams):
    extract(logical_database, redis_url)
    streams(redis_url, logical_database).wait_state("streaming")
    # The run does not see quote 90: removing the values of entities it did not find must spare it.
    result = _run_with_a_change_before_its_writes(
        logical_database, redis_url, "INSERT INTO quotes VALUES (90, 3, 1000, '2024-06-01 10:00:00', NULL)",
        lambda client: _value(client, "quote_creation_to_binding_time:90") == b"null")
    assert result["removed"]["quote_creation_to_binding_time"] == 0
    client = redis.Redis.from_url(redis_url)
    assert _value(client, "quote_creation_to_binding_time:90") == b"null"
    client.close()
    wait_equal(logical_database, redis_url, scratch_url)


def test_a_run_that_read_before_a_delete_does_not_bring_the_value_back(logical_database, redis_url, scratch_url,
                                                                       streams, make_app):
    extract(logical_database, redis_url)
    streams(redis_url, logical_database).wait_state("streaming")
    _run_with_a_change_before_its_writes(
        logical_database, redis_url, "DELETE FROM payment_transactions WHERE id = 3000",
        lambda client: _value(client, "payment_type:3000") is None)
    client = redis.Redis.from_url(redis_url)
    assert _value(client, "payment_type:3000") is None
    assert client.hget("payment_type:3000", "position").endswith(b"~")  # the tombstone that kept it out
    assert 0 < client.ttl("payment_type:3000")
    client.close()
    wait_equal(logical_database, redis_url, scratch_url)
    app = make_app(REDIS_URL=redis_url, WAREHOUSE_URL=logical_database)
    answer = app.test_client().post("/api/v1/features/inference", json={"feature_type": "payment_type",
                                                                        "entity_id": 3000})
    assert answer.status_code == 404
    # The same id inserted again: its value replaces the tombstone, which no longer expires.
    commit(logical_database, "INSERT INTO payment_transactions VALUES (3000, 300, 500, 'Prepaid', 'failed', "
                             "'2024-02-04 00:00:00')")
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: _value(client, "payment_type:3000") == b'"Prepaid"', timeout=30, what="the insert")
    assert client.ttl("payment_type:3000") == -1
    client.close()


def test_an_on_demand_value_read_before_a_change_keeps_the_streamed_value(logical_database, redis_url, streams):
    streams(redis_url, logical_database).wait_state("streaming")
    client = redis.Redis.from_url(redis_url)
    warehouse = Warehouse(logical_database)
    store = OnlineStore(client, versions=current_versions(REGISTRY))
    feature = REGISTRY.get("user_failed_transaction_count")
    try:
        # The on-demand path's read and write (FeatureServer.lookup's), with a change streamed between.
        values, read_at = warehouse.compute_at(feature, [4])
        assert values == {4: b"0"} and read_at is not None
        commit(logical_database, "UPDATE payment_transactions SET status = 'failed' WHERE id = 4000")
        wait_for(lambda: _value(client, "user_failed_transaction_count:4") == b"1", timeout=30,
                 what="the change to be streamed")
        assert store.write(feature.feature_type, [("4", values[4])], now_seconds(), on_demand=True,
                           position=read_at) == 0
        assert _value(client, "user_failed_transaction_count:4") == b"1"
        # A later read does land.
        values, later = warehouse.compute_at(feature, [4])
        assert later > read_at
        assert store.write(feature.feature_type, [("4", values[4])], now_seconds(), position=later) == 1
        assert orjson.loads(_value(client, "user_failed_transaction_count:4")) == 1
    finally:
        warehouse.dispose()
        client.close()


def test_writes_and_removals_keep_their_order_on_a_redis_cluster(logical_database, redis_cluster_url):
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    store = OnlineStore(client, versions=current_versions(REGISTRY))
    warehouse = Warehouse(logical_database)
    feature = REGISTRY.get("user_failed_transaction_count")
    try:
        extract_all(list(REGISTRY), warehouse, store, chunk_size=4)  # a script call per key, per node
        assert client.hget("user_failed_transaction_count:3", "value") == b"2"
        before, read_before = warehouse.compute_at(feature, [4])
        commit(logical_database, "UPDATE payment_transactions SET status = 'failed' WHERE id = 4000",
               "DELETE FROM payment_transactions WHERE id = 3000")
        after, read_after = warehouse.compute_at(feature, [4])
        assert store.apply_changes([(feature.feature_type, list(after.items()), [], read_after),
                                    ("payment_type", [], [3000], read_after)], now_seconds()) == (1, 1)
        # Writes of the earlier read lose, on every node.
        assert store.write(feature.feature_type, [("4", before[4])], now_seconds(), position=read_before) == 0
        assert store.write("payment_type", [("3000", b'"Credit"')], now_seconds(), position=read_before) == 0
        assert client.hget("user_failed_transaction_count:4", "value") == b"1"
        assert client.hget("payment_type:3000", "value") is None
        # A later run writes over both (the tombstone's id is gone from its rows: it stays removed).
        extract_all(list(REGISTRY), warehouse, store, chunk_size=4)
        assert client.hget("user_failed_transaction_count:4", "value") == b"1"
        assert client.hget("payment_type:3000", "value") is None
    finally:
        warehouse.dispose()
        client.close()


def test_a_partitioned_runs_stale_removal_spares_an_entity_streamed_after_its_reads(
        logical_database, redis_url, scratch_url, streams, monkeypatch):
    """The partitioned run (workers.jobs, its partitions run in this process as a run's own job
    runs the ones no worker took): quote 90 is inserted and streamed after every partition read
    the warehouse, before the run removes the values of entities it did not find. The run's
    clock is a few seconds ahead of the streaming process's (another host; or both in one second):
    computed_at cannot tell the streamed value is the newer, the positions can."""
    import types
    import uuid

    from config import Config
    from workers import jobs

    extract(logical_database, redis_url)
    streams(redis_url, logical_database).wait_state("streaming")
    client = redis.Redis.from_url(redis_url)
    warehouse = Warehouse(logical_database)
    store = OnlineStore(client, versions=current_versions(REGISTRY))
    remove_stale = store.remove_stale

    def after_every_read(*args, **kwargs):
        commit(logical_database, "INSERT INTO quotes VALUES (90, 3, 1000, '2024-06-01 10:00:00', NULL)")
        wait_for(lambda: _value(client, "quote_creation_to_binding_time:90") == b"null", timeout=30,
                 what="the insert to be streamed")
        return remove_stale(*args, **kwargs)

    monkeypatch.setattr(store, "remove_stale", after_every_read)
    monkeypatch.setattr(jobs, "now_seconds", lambda: now_seconds() + 5)
    monkeypatch.setenv("EXTRACT_PARTITIONS", "2")
    monkeypatch.setenv("WAREHOUSE_URL", logical_database)
    job = types.SimpleNamespace(connection=client, id=f"extract-{uuid.uuid4().hex}", origin="race-test")
    feature = REGISTRY.get("quote_creation_to_binding_time")
    try:
        # A value of an entity that is gone, read before the run: the run still removes it.
        _, before = warehouse.compute_at(feature, [41])
        assert store.write(feature.feature_type, [("999", b"null")], now_seconds(), on_demand=True,
                           position=before) == 1
        result = jobs._extract_partitioned(job, list(REGISTRY), warehouse, store, Config.from_env())
        assert result["partitions"] == 2 and result["removed"][feature.feature_type] == 1
        assert _value(client, "quote_creation_to_binding_time:90") == b"null"
        assert not client.exists("quote_creation_to_binding_time:999")
    finally:
        warehouse.dispose()
        client.close()
    wait_equal(logical_database, redis_url, scratch_url)
