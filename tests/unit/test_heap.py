"""The daemon freezes its start-up heap so full collections stop walking it,
and lets the young generation hold the objects of the requests in flight."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from voltpay.daemon.runtime import YOUNG_GENERATION_THRESHOLD, settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_objects_alive_at_start_up_leave_the_collectors_reach(thawed: None) -> None:
    kept = Node()
    assert gc.is_tracked(kept)
    assert any(o is kept for o in gc.get_objects())

    settle_heap()

    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())


def test_start_up_garbage_is_collected_not_frozen(thawed: None) -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.disable()
    try:
        settle_heap()
    finally:
        gc.enable()
    assert gone() is None


def test_objects_made_later_are_collected_as_usual(thawed: None) -> None:
    settle_heap()
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None


def test_the_young_generation_holds_the_requests_in_flight(thawed: None) -> None:
    older = gc.get_threshold()[1:]
    settle_heap()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *older)
    young_passes = gc.get_stats()[0]["collections"]
    # Three thousand live objects, as many requests in flight hold, and no pass
    # over them (the default of 700 would have made four).
    in_flight = [Node() for _ in range(3000)]
    assert gc.get_stats()[0]["collections"] == young_passes
    assert len(in_flight) == 3000
