"""The run slots' scripts (run_slots.py), on fakeredis: the rules that keep one run refreshing
at a time, whatever the interleaving of requests and runs ending."""

from __future__ import annotations

import fakeredis
import pytest

from feature_store.services.run_slots import CURRENT_RUN_KEY, NEXT_RUN_KEY, RunSlots


@pytest.fixture
def slots() -> RunSlots:
    return RunSlots(fakeredis.FakeRedis(), ttl=60)


def test_a_run_waits_only_behind_the_run_that_is_still_current(slots):
    assert slots.claim_current("a")
    # The current run ended (its slot freed) between a request reading it and claiming next:
    # waiting behind it now would let two runs refresh at once.
    assert slots.promote("a") is None
    assert not slots.claim_next("b", after="a")
    assert slots.redis.get(NEXT_RUN_KEY) is None
    assert slots.claim_current("c")
    assert slots.claim_next("b", after="c")
    assert not slots.claim_next("d", after="c")  # one waits at most


def test_promotion_moves_the_waiting_run_up_once(slots):
    slots.claim_current("a")
    slots.claim_next("b", after="a")
    assert slots.promote("a") == "b"
    assert slots.current() == "b" and slots.waiting() is None
    assert slots.promote("a") is None  # a second promoter of the same ended run changes nothing
    assert slots.current() == "b"


def test_the_enqueueing_of_a_promoted_run_is_claimed_once_unless_its_claimer_died(slots):
    slots.create_record("b", None)
    assert slots.claim_enqueue("b", now=1000, grace=30)
    assert not slots.claim_enqueue("b", now=1010, grace=30)
    assert slots.claim_enqueue("b", now=1031, grace=30)  # taken over past the grace period


def test_a_run_grows_until_it_is_sealed(slots):
    slots.create_record("a", ["payment_type"])
    assert slots.join("a", ["payment_type"])
    assert slots.join("a", ["quote_creation_to_binding_time"])  # not started: grows
    assert slots.features(["a"]) == [["payment_type", "quote_creation_to_binding_time"]]
    assert slots.seal("a") == ["payment_type", "quote_creation_to_binding_time"]
    assert slots.join("a", ["payment_type"])  # covered
    assert not slots.join("a", ["user_failed_transaction_count"])  # sealed without it
    assert not slots.join("a", None)


def test_a_run_of_every_feature_covers_any_request(slots):
    slots.create_record("a", None)
    slots.seal("a")
    assert slots.join("a", ["payment_type"]) and slots.join("a", None)
    assert slots.features(["a", "missing"]) == [None, None]


def test_release_frees_whichever_slot_names_the_run(slots):
    slots.claim_current("a")
    slots.claim_next("b", after="a")
    slots.release("b")
    assert slots.waiting() is None and slots.current() == "a"
    slots.release("a")
    assert slots.redis.get(CURRENT_RUN_KEY) is None
