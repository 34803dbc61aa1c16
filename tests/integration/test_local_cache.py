"""The web process's local cache of Redis values (server-assisted client-side caching): hits
skip Redis, and any change in Redis (another writer, an extraction, a flush, an outage) stops
the old value from being served."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis as redis_lib

from feature_store.online_store.local_cache import LocalCache
from tests.conftest import start_redis_server, wait_for

KEY = b"payment_type:1"


@pytest.fixture
def cache(redis_url):
    local = LocalCache(redis_url)
    yield local
    local.close()


def primed(cache, key=KEY):
    """Read until the listener is up and the value is cached."""
    wait_for(lambda: cache.read([key]) and cache._redirect_id is not None, what="the invalidation listener")
    cache.read([key])
    hits = cache.hits
    cache.read([key])
    assert cache.hits == hits + 1
    return cache.read([key])[0]


def test_a_cached_value_is_served_without_asking_redis(cache, redis_server):
    writer = redis_server.client()
    writer.hset(KEY, mapping={"value": b'"Credit"', "computed_at": 1})
    assert primed(cache) == (b'"Credit"', b"1")
    calls = writer.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    for _ in range(50):
        assert cache.read([KEY])[0] == (b'"Credit"', b"1")
    assert writer.info("commandstats")["cmdstat_hmget"]["calls"] == calls


@pytest.mark.parametrize("change", ["hset", "del", "flushall"])
def test_a_change_in_redis_is_served_at_once(cache, redis_server, change):
    writer = redis_server.client()
    writer.hset(KEY, mapping={"value": b'"Credit"', "computed_at": 1})
    primed(cache)
    if change == "hset":
        writer.hset(KEY, mapping={"value": b'"Debit"', "computed_at": 2})
        expected = (b'"Debit"', b"2")
    elif change == "del":
        writer.delete(KEY)
        expected = (None, None)
    else:
        writer.flushall()
        expected = (None, None)
    wait_for(lambda: tuple(cache.read([KEY])[0]) == expected, timeout=1.0, interval=0.001, what="the invalidation")


def test_readers_never_go_back_to_an_older_value_under_concurrent_writes(cache, redis_server):
    writer = redis_server.client()
    keys = [f"user_failed_transaction_count:{i}".encode() for i in range(20)]
    for key in keys:
        writer.hset(key, mapping={"value": b"0", "computed_at": 1})
    primed(cache, keys[0])
    stop = threading.Event()
    problems: list[str] = []

    def reader():
        seen = dict.fromkeys(keys, 0)
        while not stop.is_set():
            for key, (value, _) in zip(keys, cache.read(keys), strict=True):
                if int(value) < seen[key]:
                    problems.append(f"{key}: {int(value)} after {seen[key]}")
                seen[key] = int(value)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    final = 300
    for n in range(1, final + 1):
        with writer.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hset(key, "value", str(n))
            pipe.execute()
    time.sleep(0.05)
    wait_for(lambda: all(int(v) == final for v, _ in cache.read(keys)), timeout=1.0, what="the final values")
    stop.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert cache.hits > 0 and cache.invalidations > 0


def overlapping_reads(cache, monkeypatch, change_between=None):
    """Two reads of KEY in flight at once: the first is held inside its round trip until the
    second one's has returned (optionally after `change_between()` changed the key)."""
    real_fetch = cache._fetch
    first_answered, second_done = threading.Event(), threading.Event()
    calls = []

    def fetch(keys, redirect, generation):
        calls.append(keys)
        reply = real_fetch(keys, redirect, generation)
        if len(calls) == 1:
            first_answered.set()
            assert second_done.wait(5)
        return reply

    monkeypatch.setattr(cache, "_fetch", fetch)
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(cache.read([KEY])[0]))
    first.start()
    assert first_answered.wait(5)
    if change_between:
        change_between()
    answers.append(cache.read([KEY])[0])
    second_done.set()
    first.join(5)
    monkeypatch.setattr(cache, "_fetch", real_fetch)
    return [tuple(answer) for answer in answers]


def credit_and_listening(cache, redis_server):
    """KEY holds "Credit" (not yet read); the cache's invalidation listener is up. Returns a
    client to change Redis with."""
    writer = redis_server.client()
    writer.hset(KEY, mapping={"value": b'"Credit"', "computed_at": 1})
    writer.hset(b"payment_type:other", mapping={"value": b'"Debit"', "computed_at": 1})
    primed(cache, b"payment_type:other")
    return writer


def test_overlapping_reads_that_agree_fill_the_cache(cache, redis_server, monkeypatch):
    # Many web threads asking for the same keys at once (bulk training requests) must still end
    # up served from the cache.
    credit_and_listening(cache, redis_server)
    assert overlapping_reads(cache, monkeypatch) == [(b'"Credit"', b"1")] * 2
    hits = cache.hits
    assert tuple(cache.read([KEY])[0]) == (b'"Credit"', b"1") and cache.hits == hits + 1


def test_overlapping_reads_that_disagree_cache_nothing(cache, redis_server, monkeypatch):
    writer = credit_and_listening(cache, redis_server)
    # The second read sees a newer value than the first, held, one: neither may be cached, or a
    # reader could see "Credit" again after one saw "Debit". The invalidation is held back too
    # (it may arrive late), so only the disagreement itself can keep them out of the cache.
    monkeypatch.setattr(cache, "_invalidate", lambda keys: None)
    answers = overlapping_reads(cache, monkeypatch,
                                lambda: writer.hset(KEY, mapping={"value": b'"Debit"', "computed_at": 2}))
    assert sorted(answers) == [(b'"Credit"', b"1"), (b'"Debit"', b"2")]
    misses = cache.misses
    assert tuple(cache.read([KEY])[0]) == (b'"Debit"', b"2") and cache.misses == misses + 1


def test_a_key_changed_while_read_without_pause_is_cached_again(cache, redis_server, monkeypatch):
    writer = credit_and_listening(cache, redis_server)

    def change():
        seen = cache.invalidations
        writer.hset(KEY, mapping={"value": b'"Debit"', "computed_at": 2})
        wait_for(lambda: cache.invalidations > seen, what="the invalidation")

    # A read in flight across the change may not cache its (older) answer; a read started after
    # the invalidation arrived caches the new value although the older read still overlaps it.
    answers = overlapping_reads(cache, monkeypatch, change)
    assert sorted(answers) == [(b'"Credit"', b"1"), (b'"Debit"', b"2")]
    # The older read's late answer contradicted the cached one, which was dropped: one more read
    # from Redis, then it is cached again.
    assert tuple(cache.read([KEY])[0]) == (b'"Debit"', b"2")
    hits = cache.hits
    assert tuple(cache.read([KEY])[0]) == (b'"Debit"', b"2") and cache.hits == hits + 1


def test_a_late_newer_answer_of_an_ended_round_keeps_an_older_one_out(cache, redis_server, monkeypatch):
    # B registers, then is slow to ask Redis; the key changes (B's round ends); C starts a new
    # round and reads v2; the key changes again (its invalidation still in flight); B now reads v3
    # and returns it. C's v2 must not be cached: a reader would see v2 after B's caller saw v3.
    writer = redis_server.client()
    writer.hset(KEY, mapping={"value": b"1", "computed_at": 1})
    primed(cache, KEY)  # Redis tracks the key for this cache from now on
    with cache._lock:
        cache._entries.pop(KEY)  # so the next read of it goes to Redis
    real_fetch = cache._fetch
    b_may_ask, b_done, c_asked, c_may_return = (threading.Event() for _ in range(4))

    def fetch(keys, redirect, generation):
        if threading.current_thread().name == "B":
            assert b_may_ask.wait(5)
            reply = real_fetch(keys, redirect, generation)
            return reply
        reply = real_fetch(keys, redirect, generation)
        c_asked.set()
        assert c_may_return.wait(5)
        return reply

    monkeypatch.setattr(cache, "_fetch", fetch)
    answers = {}

    def read(name):
        answers[name] = tuple(cache.read([KEY])[0])
        if name == "B":
            b_done.set()

    b = threading.Thread(target=read, args=("B",), name="B")
    b.start()
    wait_for(lambda: KEY in cache._pending, what="B registered")
    seen = cache.invalidations
    writer.hset(KEY, mapping={"value": b"2", "computed_at": 2})
    wait_for(lambda: cache.invalidations > seen, what="the first invalidation")
    c = threading.Thread(target=read, args=("C",), name="C")
    c.start()
    assert c_asked.wait(5)
    monkeypatch.setattr(cache, "_invalidate", lambda keys: None)  # the second one is late
    writer.hset(KEY, mapping={"value": b"3", "computed_at": 3})
    b_may_ask.set()
    assert b_done.wait(5)
    c_may_return.set()
    c.join(5)
    b.join(5)
    assert answers == {"B": (b"3", b"3"), "C": (b"2", b"2")}
    monkeypatch.setattr(cache, "_fetch", real_fetch)
    assert tuple(cache.read([KEY])[0]) == (b"3", b"3")  # not C's v2 from the cache


def test_when_redis_stops_answering_the_cache_is_dropped_and_reads_fail_fast():
    server = start_redis_server()
    cache = LocalCache(server.url)
    try:
        server.client().hset(KEY, mapping={"value": b'"Credit"', "computed_at": 1})
        primed(cache)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            paused = time.monotonic()

            def refused():
                try:
                    cache.read([KEY])
                    return False
                except redis_lib.RedisError:
                    return True

            wait_for(refused, timeout=2.0, interval=0.01, what="reads to fail")
            assert time.monotonic() - paused < 1.5
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        # Back: served again, first from Redis, then cached anew.
        wait_for(lambda: tuple(cache.read([KEY])[0]) == (b'"Credit"', b"1"), timeout=2.0, what="recovery")
    finally:
        cache.close()
        server.stop()


@pytest.mark.parametrize("closing", ["client kill", "server idle timeout"])
def test_a_lost_tracking_connection_drops_the_cache(cache, redis_server, closing):
    """Redis forgets what a connection read when it closes; nothing cached through it may stay."""
    writer = redis_server.client()
    writer.hset(KEY, mapping={"value": b'"Credit"', "computed_at": 1})
    primed(cache)
    if closing == "client kill":
        writer.client_kill_filter(_type="normal", skipme=True)
    else:
        writer.config_set("timeout", 1)
        time.sleep(2.5)
    try:
        writer.hset(KEY, mapping={"value": b'"Debit"', "computed_at": 2})
        wait_for(lambda: tuple(cache.read([KEY])[0]) == (b'"Debit"', b"2"), timeout=1.0, interval=0.01,
                 what="the new value")
    finally:
        writer.config_set("timeout", 0)


def test_a_flood_of_invalidations_keeps_the_listener_connected(cache, redis_server):
    writer = redis_server.client()
    keys = [f"payment_type:{i}".encode() for i in range(2000)]
    with writer.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hset(key, mapping={"value": b'"Credit"', "computed_at": 1})
        pipe.execute()
    primed(cache, keys[0])
    generation = cache._generation
    deadline = time.monotonic() + 2.0
    n = 0
    while time.monotonic() < deadline:  # 2 s of rewrites, each invalidating what was cached
        cache.read(keys)
        with writer.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hset(key, "computed_at", n)
            pipe.execute()
        n += 1
    assert cache._generation == generation, "the listener reconnected although Redis answered"
    wait_for(lambda: [int(c) for _, c in cache.read(keys)] == [n - 1] * len(keys), timeout=1.0,
             what="the last invalidations")
