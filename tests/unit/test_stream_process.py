"""The streaming loop's batch sizes (streaming/process.py): a backlog is read in catch-up batches,
the ordinary flow in ordinary ones."""

from __future__ import annotations

import threading

import fakeredis

from feature_store.streaming.apply import Applied
from feature_store.streaming.decoding import Transaction
from feature_store.streaming.process import StreamProcess


class ScriptedSlot:
    """A slot whose reads are cut (more waiting) as `cuts` says, then stops the loop."""

    name = "feature_store"

    def __init__(self, cuts: list[bool], stop: threading.Event) -> None:
        self.cuts = list(cuts)
        self.stop = stop
        self.asked: list[int] = []
        self.confirmed: list[int] = []

    def check(self, tables) -> None:
        pass

    def ensure(self) -> bool:
        return False

    def peek(self, max_changes: int):
        self.asked.append(max_changes)
        cut = self.cuts.pop(0)
        if not self.cuts:
            self.stop.set()
        return [Transaction(xid=len(self.asked))], len(self.asked), cut

    def advance(self, position: int) -> None:
        self.confirmed.append(position)


class NoChanges:
    tables = ["users"]

    def apply(self, transactions) -> Applied:
        return Applied()


def test_a_backlog_is_read_in_catch_up_batches_then_ordinary_ones_again():
    stop = threading.Event()
    slot = ScriptedSlot([False, True, True, False, False, True, False], stop)
    StreamProcess(slot, NoChanges(), fakeredis.FakeRedis(), batch_changes=100, catch_up_changes=400,
                  poll_interval=0).run(stop)
    # After a read cut by its limit, the next one takes up to catch_up_changes.
    assert slot.asked == [100, 100, 400, 400, 100, 100, 400]
    assert slot.confirmed == [1, 2, 3, 4, 5, 6, 7]  # every batch confirmed after it was applied


def test_catch_up_batches_are_never_smaller_than_ordinary_ones():
    stop = threading.Event()
    slot = ScriptedSlot([True, True, False], stop)
    StreamProcess(slot, NoChanges(), fakeredis.FakeRedis(), batch_changes=100, catch_up_changes=10,
                  poll_interval=0).run(stop)
    assert slot.asked == [100, 100, 100]


def test_catch_up_batches_default_to_a_bounded_multiple_of_ordinary_ones():
    process = StreamProcess(ScriptedSlot([False], threading.Event()), NoChanges(), fakeredis.FakeRedis(),
                            batch_changes=100)
    assert process.catch_up_changes == 400
