"""The streaming process's writes to a real Redis (online_store/ordering.py): the change writer's
fast path (each feature's commands packed by hand and sent at once, the replies read at the end)
leaves Redis exactly as apply_changes' pipeline does, and counts the same, whatever was stored
before: values of earlier, later or other clusters' positions, tombstones, values without one."""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.online_store import OnlineStore, ordering

FEATURES = ("payment_type", "user_failed_transaction_count")
IDS = st.integers(1, 12)
# Positions of two clusters, and none (a SQLite warehouse's writes).
POSITION = st.one_of(st.none(), st.builds(lambda cluster, at: b"%s:%016X" % (cluster, at),
                                          st.sampled_from([b"7001", b"7002"]), st.integers(0, 5)))
STORED = st.one_of(st.tuples(st.just("value"), POSITION),
                   st.tuples(st.just("tombstone"), POSITION.filter(lambda p: p is not None)))
WORK = st.lists(st.tuples(
    st.sampled_from(FEATURES),
    st.lists(st.tuples(IDS, st.sampled_from([b"1", b'"Credit"', b"null"])), unique_by=lambda v: v[0], max_size=8),
    st.lists(IDS, unique=True, max_size=6),
    POSITION), max_size=4)


def _state(client: redis.Redis) -> dict:
    return {name: (client.type(name), client.hgetall(name) if client.type(name) == b"hash" else
                   sorted(client.smembers(name)), client.ttl(name) > 0) for name in sorted(client.keys("*"))}


def _prepare(client: redis.Redis, stored: dict) -> None:
    client.flushdb()
    for (feature_type, entity_id), (kind, position) in stored.items():
        name = f"{feature_type}:{entity_id}"
        if kind == "value":
            client.hset(name, mapping={"value": b"0", "computed_at": b"1",
                                       **({"position": position} if position else {})})
        else:
            client.hset(name, "position", position + b"~")
            client.expire(name, 3600)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.tuples(st.sampled_from(FEATURES), IDS), STORED, max_size=10), WORK, st.booleans())
def test_the_change_writer_equals_one_pipeline(redis_server, stored, work, on_demand):
    base = redis_server.url.rsplit("/", 1)[0]
    plain, packed = redis.Redis.from_url(f"{base}/3"), redis.Redis.from_url(f"{base}/4")
    try:
        _prepare(plain, stored)
        expected = ordering.apply_changes(OnlineStore(plain, versions={"payment_type": "2"}), work, 1_700_000_000,
                                          on_demand=on_demand)
        _prepare(packed, stored)
        store = OnlineStore(packed, versions={"payment_type": "2"})
        assert store._raw_protocol  # the fast path, not the collecting fallback
        with store.change_writer(1_700_000_000, on_demand=on_demand) as (write, counts):
            for item in work:
                write(*item)
        assert (counts["written"], counts["removed"]) == expected
        assert _state(plain) == _state(packed)
    finally:
        plain.close()
        packed.close()


def test_the_change_writer_loads_its_scripts_again_after_a_flush(redis_url):
    """A Redis restarted (or its scripts flushed) since the last batch."""
    client = redis.Redis.from_url(redis_url)
    store = OnlineStore(client)
    position = b"7001:%016X" % 5
    try:
        for entity_id in (1, 3):
            with store.change_writer(1) as (write, counts):
                write("payment_type", [(entity_id, b'"Debit"')], [entity_id + 1], position)
            assert counts == {"written": 1, "removed": 1}
            client.script_flush()
        assert client.hget("payment_type:3", "value") == b'"Debit"'
    finally:
        client.close()


def test_a_failure_while_computing_sends_nothing_more(redis_url):
    """The block fails (the warehouse, say) after one feature was sent: that one is written, the
    connection is dropped, the next batch starts clean."""
    client = redis.Redis.from_url(redis_url)
    store = OnlineStore(client)
    try:
        try:
            with store.change_writer(1) as (write, _):
                write("payment_type", [(1, b'"Debit"')], [], None)
                raise RuntimeError("the warehouse failed")
        except RuntimeError:
            pass
        with store.change_writer(1) as (write, counts):
            write("payment_type", [(2, b'"Credit"')], [], None)
        assert counts["written"] == 1
        assert client.hget("payment_type:2", "value") == b'"Credit"'
    finally:
        client.close()  # an unclosed client's sockets warn when collected, failing whichever test runs then
    client.close()
