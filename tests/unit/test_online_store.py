"""The Redis layout and the online store's reads, writes and stale-value removal (fakeredis)."""

from array import array

import fakeredis
import pytest

from feature_store.online_store import OnlineStore, format_computed_at, key, now_seconds


@pytest.fixture
def store():
    return OnlineStore(fakeredis.FakeRedis())


def test_a_value_is_one_hash_at_feature_type_colon_entity_id(store):
    store.write("payment_type", [(5, b'"Credit"')], computed_at=1_700_000_000)
    assert key("payment_type", "5") == "payment_type:5"
    assert store.redis.hgetall("payment_type:5") == {b"value": b'"Credit"', b"computed_at": b"1700000000"}


def test_reads_return_values_in_order_and_none_where_missing(store):
    store.write("f", [(1, b"1"), (2, b"null")], computed_at=10)
    assert store.read([("f", "2"), ("f", "3"), ("f", "1")]) == [(b"null", 10), None, (b"1", 10)]
    assert store.read([("f", "1")]) == [(b"1", 10)]


def test_computed_at_is_served_as_iso_8601_without_offset():
    assert format_computed_at(0) == "1970-01-01T00:00:00"
    assert format_computed_at(1_737_374_400) == "2025-01-20T12:00:00"


def test_now_is_integer_seconds():
    assert isinstance(now_seconds(), int) and 1_700_000_000 < now_seconds() < 2**31


def test_each_run_stamp_is_later_than_the_last_even_within_a_second(store):
    stamps = [store.run_stamp() for _ in range(5)]
    assert stamps == sorted(set(stamps)) and stamps[0] >= now_seconds() - 1


def test_stale_removal_deletes_only_older_values_of_entities_that_are_gone(store):
    store.write("f", [(1, b"1"), (2, b"2"), (3, b"3")], computed_at=100)
    store.write("f", [(4, b"4")], computed_at=300)  # written on demand after the run began
    store.redis.hset("f:not-an-id", "value", "x")     # not ours to judge
    store.redis.hset("f:x1", "value", "x")
    store.redis.hset("f:-", "value", "x")
    store.redis.hset("g:2", mapping={"value": "1", "computed_at": 1})  # another feature
    removed = store.remove_stale({"f": array("q", [1, 3])}, older_than=200)
    assert removed == {"f": 1}
    assert store.redis.exists("f:1", "f:3", "f:4", "f:not-an-id", "f:x1", "f:-", "g:2") == 7
    assert not store.redis.exists("f:2")
