"""The daemon freezes its start-up heap so full collections stop walking it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from voltpay.daemon.runtime import settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


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
