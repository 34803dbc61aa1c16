"""Redis Cluster as the online store (REDIS_CLUSTER=1, REDIS_URL naming a node) with RQ on its
own standalone Redis (RQ_REDIS_URL): extraction by real rq workers (the packed writer per node,
the id records, removal of gone entities, partitioned runs), inference and training reads."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster
from sqlalchemy import create_engine, text

from feature_store.warehouse import demo
from tests.integration.test_faults import assert_store_matches_warehouse

BASE = "/api/v1/features"


@pytest.fixture
def cluster(redis_cluster_url):
    client = RedisCluster.from_url(redis_cluster_url)
    yield client
    client.close()


@pytest.fixture
def warehouse(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo.generate(url, users=1500, seed=21)
    return url


@pytest.mark.parametrize("partitions", [1, 2])
def test_values_live_on_the_cluster_and_follow_the_warehouse(make_app, redis_cluster_url, redis_url, redis_server,
                                                            cluster, warehouse, start_worker, partitions):
    env = {"REDIS_URL": redis_cluster_url, "REDIS_CLUSTER": "1", "RQ_REDIS_URL": redis_url,
           "EXTRACT_PARTITIONS": str(partitions), "EXTRACT_CHUNK_SIZE": "700"}
    start_worker(warehouse, env=env)
    app = make_app(REDIS_URL=redis_cluster_url, REDIS_CLUSTER=True, RQ_REDIS_URL=redis_url, WAREHOUSE_URL=warehouse)
    client = app.test_client()
    first = client.post(f"{BASE}/extract")
    assert first.status_code == 200, first.get_json()
    assert_store_matches_warehouse(cluster, warehouse)
    # Spread over every node; RQ's keys stay on the standalone Redis, the values off it.
    per_node = [node.redis_connection.dbsize() for node in cluster.get_primaries()]
    assert len(per_node) == 3 and all(n > 100 for n in per_node)
    assert not any(k.startswith(b"rq:") for k in cluster.scan_iter(count=5000))
    assert not any(b"payment_type:" in k for k in redis_server.client().scan_iter(count=5000))

    engine = create_engine(warehouse)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM payment_transactions WHERE id % 3 = 0"))
        conn.execute(text("UPDATE quotes SET bound_at = NULL WHERE id % 5 = 0"))
    engine.dispose()
    again = client.post(f"{BASE}/extract")
    assert again.status_code == 200, again.get_json()["error"]
    status = client.get(f"{BASE}/extract/{again.get_json()['job_id']}").get_json()
    assert status["result"]["removed"]["payment_type"] > 0
    assert_store_matches_warehouse(cluster, warehouse)

    # Reads: one value, many values (across nodes), a feature set; a miss computed on demand.
    answer = client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": 1}).get_json()
    assert answer["success"] is True
    items = [{"feature_type": "user_failed_transaction_count", "entity_id": n} for n in range(1, 400)]
    results = client.post(f"{BASE}/training", json={"features": items}).get_json()["results"]
    assert all(r["success"] for r in results)
    cluster.delete("user_failed_transaction_count:7")
    assert client.post(f"{BASE}/inference", json={"feature_set": "underwriting_v1", "entity_id": 7}
                       ).get_json()["success"] is True
    assert cluster.exists("user_failed_transaction_count:7")
    ready = client.get("/ready").get_json()
    assert ready["status"] == "ready" and ready["workers"] == 1


def test_the_local_cache_works_per_node_and_each_node_invalidates_its_keys(make_app, redis_cluster_url, redis_url,
                                                                          cluster, warehouse):
    from feature_store.online_store.cluster_cache import ClusterLocalCache
    from tests.conftest import wait_for

    app = make_app(REDIS_URL=redis_cluster_url, REDIS_CLUSTER=True, RQ_REDIS_URL=redis_url, WAREHOUSE_URL=warehouse,
                   REDIS_LOCAL_CACHE=True)
    store = app.extensions["feature_store"].store
    assert isinstance(store.local_cache, ClusterLocalCache)
    ids = [str(i) for i in range(1, 61)]  # keys of every node
    keys = [("payment_type", i) for i in ids]
    assert len({cluster.get_node_from_key(f"payment_type:{i}").name for i in ids}) == 3
    store.write("payment_type", [(i, b'"Credit"') for i in ids], computed_at=2_000_000_000)

    def all_cached() -> bool:
        hits = store.local_cache.hits
        assert [v for v, _ in store.read(keys)] == [b'"Credit"'] * len(keys)
        return store.local_cache.hits - hits == len(keys)

    wait_for(all_cached, what="every node's values served from the cache")
    # A write on each node reaches that node's cache: no read sees the old value for long.
    store.write("payment_type", [(i, b'"Debit"') for i in ids], computed_at=2_000_000_001)
    wait_for(lambda: [v for v, _ in store.read(keys)] == [b'"Debit"'] * len(keys), timeout=2.0,
             what="every node's invalidation")
    # And the API serves through it.
    client = app.test_client()
    answer = client.post(f"{BASE}/inference", json={"feature_type": "payment_type", "entity_id": 7}).get_json()
    assert answer["feature_value"] == "Debit"


def test_a_slot_moved_under_the_local_cache_is_read_from_its_new_node(make_app, redis_cluster_url, redis_url,
                                                                      cluster, warehouse):
    from tests.conftest import wait_for

    app = make_app(REDIS_URL=redis_cluster_url, REDIS_CLUSTER=True, RQ_REDIS_URL=redis_url, WAREHOUSE_URL=warehouse,
                   REDIS_LOCAL_CACHE=True)
    store = app.extensions["feature_store"].store
    name = "payment_type:7"
    store.write("payment_type", [("7", b'"Credit"')], computed_at=2_000_000_000)

    def cached() -> bool:
        hits = store.local_cache.hits
        return store.read([("payment_type", "7")])[0][0] == b'"Credit"' and store.local_cache.hits == hits + 1

    wait_for(cached, what="the value cached on its node")
    # Move the key's slot to another node (as a resharding does) behind the app's back.
    slot = cluster.keyslot(name)
    source = cluster.get_node_from_key(name)
    target = next(n for n in cluster.get_primaries() if n.name != source.name)
    ids = {n.name: cluster.cluster_myid(n) for n in (source, target)}
    src, dst = source.redis_connection, target.redis_connection
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.name])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.name])
    src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", name)
    for connection in (src, dst):
        connection.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.name])
    dst.hset(name, "value", b'"Debit"')  # changed on its new node
    wait_for(lambda: store.read([("payment_type", "7")])[0][0] == b'"Debit"', timeout=3.0,
             what="the value from the slot's new node")
    assert app.extensions["feature_store"].store.redis.get_node_from_key(name).name == target.name
