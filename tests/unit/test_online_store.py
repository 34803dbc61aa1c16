"""The Redis layout and the online store's reads, writes and stale-value removal (fakeredis)."""

import zlib
from array import array

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.online_store import OnlineStore, format_computed_at, key, now_seconds
from feature_store.online_store.id_records import (
    _minus,
    _union,
    decode_ids,
    encode_ids,
    on_demand_key,
    pending_key,
    record_key,
)
from feature_store.registry import INT64_MAX, INT64_MIN


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


def run(store, ids_by_part, stamp, feature_type="f", *, finish=True):
    """One extraction run as the services drive it: ids noted, values written, stale removed."""
    store.begin_run([feature_type])
    for part, ids in enumerate(ids_by_part):
        store.note_run_ids(feature_type, stamp, part, array("q", ids))
        with store.batch_writer(stamp) as write:
            write(feature_type, [(i, b"%d" % i) for i in ids])
    if finish:
        return store.remove_stale([feature_type], stamp, len(ids_by_part), stamp)


def test_stale_removal_deletes_only_older_values_of_entities_that_are_gone(store):
    store.write("f", [(1, b"1"), (2, b"2"), (3, b"3")], computed_at=100)  # before records existed
    store.redis.hset("f:not-an-id", "value", "x")     # not ours to judge
    store.redis.hset("f:x1", "value", "x")
    store.redis.hset("f:-", "value", "x")
    store.redis.hset("f:007", "value", "x")
    store.redis.hset("g:2", mapping={"value": "1", "computed_at": 1})  # another feature
    store.begin_run(["f"])
    store.note_run_ids("f", 200, 0, array("q", [1, 3]))
    store.write("f", [(4, b"4")], computed_at=300, on_demand=True)  # on demand, after the run began
    with store.batch_writer(200) as write:
        write("f", [(1, b"1"), (3, b"3")])
    assert store.remove_stale(["f"], 200, 1, 200) == {"f": 1}
    assert store.redis.exists("f:1", "f:3", "f:4", "f:not-an-id", "f:x1", "f:-", "f:007", "g:2") == 8
    assert not store.redis.exists("f:2")
    assert list(decode_ids(store.redis.get(record_key("f")))) == [1, 3, 4]


def test_later_runs_find_gone_entities_in_the_record_without_scanning(store, monkeypatch):
    assert run(store, [[1, 2, 3, 5]], 100) == {"f": 0}
    monkeypatch.setattr(store.records, "scan_ids", lambda *a, **k: pytest.fail("scanned the keyspace"))
    assert run(store, [[1, 3, 6]], 200) == {"f": 2}
    assert store.redis.exists("f:2", "f:5") == 0 and store.redis.exists("f:1", "f:3", "f:6") == 3
    assert run(store, [[1, 3, 6]], 300) == {"f": 0}
    assert list(decode_ids(store.redis.get(record_key("f")))) == [1, 3, 6]
    assert store.redis.keys("feature-store:ids:f:run:*") == [] and not store.redis.exists(pending_key("f"))


def test_values_computed_on_demand_go_when_their_entity_is_gone(store, monkeypatch):
    run(store, [[1]], 100)
    monkeypatch.setattr(store.records, "scan_ids", lambda *a, **k: pytest.fail("scanned the keyspace"))
    store.write("f", [("7", b"7"), ("8", b"8")], computed_at=150, on_demand=True)
    assert store.redis.smembers(on_demand_key("f")) == {b"7", b"8"}
    assert run(store, [[1, 8]], 200) == {"f": 1}  # 7 is gone from the warehouse, 8 is not
    assert not store.redis.exists("f:7") and store.redis.exists("f:8")
    assert not store.redis.exists(on_demand_key("f"))


def test_a_value_computed_on_demand_after_the_run_began_stays(store):
    run(store, [[1]], 100)
    store.begin_run(["f"])
    store.note_run_ids("f", 200, 0, array("q", [1]))
    store.write("f", [("9", b"9")], computed_at=250, on_demand=True)  # an entity newer than the snapshot
    assert store.remove_stale(["f"], 200, 1, 200) == {"f": 0}
    assert store.redis.exists("f:9")
    assert 9 in decode_ids(store.redis.get(record_key("f")))  # the next run checks it again


def test_a_failed_run_leaves_its_ids_for_the_next_run(store, monkeypatch):
    run(store, [[1, 2]], 100)
    run(store, [[1, 2, 5]], 200, finish=False)  # wrote 5, then failed before removing anything
    monkeypatch.setattr(store.records, "scan_ids", lambda *a, **k: pytest.fail("scanned the keyspace"))
    assert run(store, [[1, 2]], 300) == {"f": 1}  # 5 is gone now: the failed run's list names it
    assert not store.redis.exists("f:5")


def test_a_lost_record_falls_back_to_one_scan(store):
    run(store, [[1, 2, 3]], 100)
    store.redis.delete(record_key("f"))
    assert run(store, [[1]], 200) == {"f": 2}
    assert store.redis.exists("f:2", "f:3") == 0


def test_a_run_of_several_parts_removes_once_every_part_wrote(store):
    run(store, [[1, 2, 3, 4]], 100)
    assert run(store, [[1], [4, 5]], 200) == {"f": 2}
    assert store.redis.exists("f:2", "f:3") == 0 and store.redis.exists("f:1", "f:4", "f:5") == 3
    # A part whose id list is missing: the run cannot tell what it wrote, so nothing goes.
    store.begin_run(["f"])
    store.note_run_ids("f", 300, 1, array("q", [5]))
    assert store.remove_stale(["f"], 300, 2, 300) == {"f": 0}
    assert store.redis.exists("f:1", "f:4", "f:5") == 3


def test_a_lost_or_unreadable_list_falls_back_to_one_scan_and_does_not_stick(store):
    run(store, [[1, 2]], 100)
    store.redis.sadd(pending_key("f"), "feature-store:ids:f:run:50:0")  # its list is gone
    with store.batch_writer(60) as write:
        write("f", [(9, b"9")])  # what that lost list named
    assert run(store, [[1]], 200) == {"f": 2}
    assert store.redis.exists("f:2", "f:9") == 0 and not store.redis.exists(pending_key("f"))
    store.redis.set(record_key("f"), b"ids1garbage")
    store.write("f", [(5, b"5")], computed_at=1)
    assert run(store, [[1]], 300) == {"f": 1}
    assert not store.redis.exists("f:5")


def test_a_part_run_again_under_the_same_stamp_keeps_what_its_first_attempt_wrote(store, monkeypatch):
    run(store, [[1, 2]], 100)
    # First attempt of run 200 sees a new entity 3, writes it, and its worker dies.
    run(store, [[1, 2, 3]], 200, finish=False)
    # Entity 3 is deleted; the retried run (same stamp, same part) no longer sees it.
    run(store, [[1, 2]], 200, finish=False)
    store.remove_stale(["f"], 200, 1, 200)
    assert 3 in decode_ids(store.redis.get(record_key("f")))  # still named, so the next run checks it
    monkeypatch.setattr(store.records, "scan_ids", lambda *a, **k: pytest.fail("scanned the keyspace"))
    assert run(store, [[1, 2]], 300) == {"f": 1}
    assert not store.redis.exists("f:3")


def test_a_key_of_another_type_at_a_gone_entity_goes(store):
    run(store, [[1, 2]], 100)
    store.redis.delete("f:2")
    store.redis.set("f:2", "not a hash")
    assert run(store, [[1]], 200) == {"f": 1}
    assert not store.redis.exists("f:2")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), unique=True).map(sorted))
def test_id_lists_round_trip(ids):
    assert list(decode_ids(encode_ids(array("q", ids)))) == ids


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-50, max_value=50)), st.lists(st.integers(min_value=-50, max_value=50)),
       st.integers(min_value=1, max_value=8))
def test_id_list_difference_and_union(ids, others, chunk):
    run_ids = array("q", sorted(set(others)))
    assert _minus(ids, run_ids, chunk) == sorted(x for x in ids if x not in set(run_ids))
    extra = sorted(set(ids) - set(run_ids))
    assert list(_union(run_ids, extra)) == sorted(set(ids) | set(run_ids))


def test_a_million_consecutive_ids_take_a_few_kilobytes():
    assert len(encode_ids(array("q", range(1, 1_000_001)))) < 20_000


@pytest.mark.parametrize("blob", [b"", b"ids1x", b"nope", b"ids1" + zlib.compress(b"123")])
def test_a_malformed_id_list_is_refused(blob):
    with pytest.raises(ValueError):
        decode_ids(blob)
