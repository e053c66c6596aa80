"""The embedded bus window: counted locally, corrected from the queue only
while it looks shut."""

from __future__ import annotations

from voltpay.daemon.pipeline import BusWindow


class Queue:
    def __init__(self, depth: int = 0) -> None:
        self.depth = depth
        self.asked = 0

    async def __call__(self) -> int:
        self.asked += 1
        return self.depth


async def test_the_window_counts_without_asking_the_queue() -> None:
    queue = Queue()
    window = BusWindow(20, queue, resync_seconds=0.0)
    assert await window.room() == 20
    window.published(15)
    assert await window.room() == 5
    window.deleted(10)
    assert await window.room() == 15
    window.deleted(50)  # deletes of messages someone else sent never go below zero
    assert await window.room() == 20
    assert queue.asked == 0


async def test_a_shut_window_is_corrected_from_the_queue_at_most_once_a_period() -> None:
    queue = Queue(depth=3)  # 17 of the 20 went to the dead-letter queue, never deleted
    window = BusWindow(20, queue, resync_seconds=60.0)
    window.published(20)
    assert await window.room() == 17
    assert queue.asked == 1
    window.published(17)
    assert await window.room() == 0  # shut again, but corrected only once a period
    assert queue.asked == 1


async def test_a_failing_queue_count_does_not_stop_publishing() -> None:
    async def broken() -> int:
        raise OSError("connection refused")

    window = BusWindow(20, broken, resync_seconds=0.0)
    window.published(20)
    assert await window.room() == 20


async def test_messages_someone_else_sent_take_no_room_from_our_events() -> None:
    queue = Queue(depth=30)  # our 20, and 10 that the poller dead-letters
    window = BusWindow(20, queue, resync_seconds=0.0)
    window.published(20)
    assert await window.room() == 0  # ours fill it; the others add nothing
    window.deleted(20)
    queue.depth = 10  # the others, not yet moved
    assert await window.room() == 20
