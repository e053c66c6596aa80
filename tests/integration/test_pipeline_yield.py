"""Payments first: while API requests wait for the daemon's CPU, the outbox
relay publishes only its floor's events a second, until the oldest event held
back has waited its most; nothing is lost and nothing is texted twice. Over
the real SNS/SQS API (moto's server over HTTP).

Whether requests wait for the CPU is read from the process (requests in
flight, CPU time used); here the load is made busy by hand, which is the one
thing not real."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from tests.client import Api, Customer, eventually
from tests.fakes.recording_sms import RecordingSmsSender
from voltpay.agents.pacing import Load
from voltpay.daemon.runtime import Daemon
from voltpay.domain.events import UserRegistered
from voltpay.models.outbox import record_event
from voltpay.models.tables import Notification

FLOOR = 10.0
MAX_DELAY = 8.0
EVENTS = 300
YIELDING = "voltpay_outbox_yielding"


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return {
        "agents": {
            "drain_pace_floor": FLOOR,
            "yield_in_flight": 1,
            "yield_max_delay_seconds": MAX_DELAY,
        }
    }


@pytest.fixture
def sms_sender(sms: RecordingSmsSender) -> RecordingSmsSender:
    return sms


class Busy:
    """Stands in for the process's reading of its own load."""

    def __init__(self) -> None:
        self.now = False


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Busy:
    busy = Busy()
    monkeypatch.setattr(Load, "busy", lambda _load: busy.now)
    return busy


@contextlib.asynccontextmanager
async def commits_arriving(daemon: Daemon) -> AsyncIterator[None]:
    """Other commits keep coming, 100 a second, as under a payment load
    (the pace of the pipeline follows the rate of commits)."""

    async def commit() -> None:
        while True:
            committed(daemon)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(commit())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def committed(daemon: Daemon) -> None:
    """What a commit that wrote events tells the pipeline."""
    assert daemon.pipeline is not None
    daemon.pipeline.wake()


async def welcome_events(who: Customer, count: int) -> set[str]:
    """``count`` events texting ``who``, committed at once."""
    ids = set()
    async with in_transaction() as conn:
        for _ in range(count):
            registered = UserRegistered(
                user_id=uuid.UUID(who.user_id),
                username=who.username,
                wallet_id=uuid.UUID(who.wallet_id),
            )
            event = await record_event(conn, registered, datetime.now(UTC))
            ids.add(str(event.event_id))
    return ids


async def sent(expected: set[str]) -> int:
    return await Notification.filter(event_id__in=list(expected), status="sent").count()


async def test_events_held_back_for_busy_requests_go_once_the_oldest_has_waited_its_most(
    api: Api, daemon: Daemon, sms: RecordingSmsSender, load: Busy
) -> None:
    alice = await api.customer()
    await eventually(lambda: welcomed(sms))  # her own welcome, before the load
    load.now = True
    async with commits_arriving(daemon):
        await asyncio.sleep(2.5)  # the commit rate is known to the pacer
        began = asyncio.get_running_loop().time()
        events = await welcome_events(alice, EVENTS)
        committed(daemon)

        # Held back: at most the floor's pace (and a burst of two batches)
        # while the oldest is younger than the delay.
        await asyncio.sleep(MAX_DELAY / 2)
        assert daemon.metrics.sample(YIELDING) == 1
        assert await sent(events) <= FLOOR * (MAX_DELAY / 2 + 0.5) + 20

        # Past the delay the relay keeps up (1.1 x 100 + 10 a second),
        # although requests still wait: all go within a few seconds more. At
        # the floor alone the last would go only about 28 s after the first.
        await eventually(lambda: _all(sent(events)), timeout=MAX_DELAY + 12, interval=0.2)
        took = asyncio.get_running_loop().time() - began
    assert took >= MAX_DELAY
    assert Counter(sms.per_event()[event] for event in events) == Counter({1: EVENTS})


async def _all(count: Awaitable[int]) -> bool:
    return await count == EVENTS


async def welcomed(sms: RecordingSmsSender) -> bool:
    """The first SMS is texted and recorded as sent."""
    return bool(sms.sent) and await sent({sms.sent[0].idempotency_key}) == 1


@pytest.mark.parametrize("why", ["requests are not waiting", "the daemon is stopping"])
async def test_events_go_at_the_usual_pace_when_there_is_no_call_to_yield(
    api: Api, daemon: Daemon, sms: RecordingSmsSender, load: Busy, why: str
) -> None:
    alice = await api.customer()
    if why == "the daemon is stopping":
        # Busy, but draining: what is held back must go before the bus closes.
        load.now = True
        daemon.readiness.draining = True
    async with commits_arriving(daemon):
        await asyncio.sleep(2.5)
        events = await welcome_events(alice, EVENTS)
        committed(daemon)
        # At 1.1 x 100 + 10 a second, all within about 3 s; well inside the
        # delay a yielding relay would have held them for.
        await eventually(lambda: _all(sent(events)), timeout=MAX_DELAY - 1, interval=0.1)
        assert daemon.metrics.sample(YIELDING) == 0
    assert Counter(sms.per_event()[event] for event in events) == Counter({1: EVENTS})
