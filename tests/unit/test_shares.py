"""Each sender's share and turns (voltpay.http.shares), without a server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import make_mocked_request

from voltpay.http import shares as shares_module
from voltpay.http.problems import Problem
from voltpay.http.shares import ACTIVE_SECONDS, Shares


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shares(clock: Clock, *, per_user: int = 8, running: int = 2) -> Shares:
    return Shares(per_user=per_user, per_client=per_user, running=running, clock=clock)


class Sender:
    """Requests of one sender that start running and wait to be let finish."""

    def __init__(self, shares: Shares, name: str) -> None:
        self.shares = shares
        self.name = name
        self.running: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    def send(self) -> asyncio.Event:
        finish = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._request(finish)))
        return finish

    async def _request(self, finish: asyncio.Event) -> None:
        async with self.shares.taken(make_mocked_request("GET", "/api/bills"), self.name):
            self.running.append(finish)
            await finish.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def held(s: Shares, name: str) -> AsyncIterator[None]:
    async with s.taken(make_mocked_request("GET", "/api/bills"), name):
        yield


async def four_beside_a_quiet_sender(s: Shares) -> tuple[Sender, asyncio.Event]:
    """A quiet sender seen just now (still being served), then four requests
    of a flooder; the flooder and its first request's finish."""
    async with held(s, "quiet"):
        pass
    flood = Sender(s, "flooder")
    first = flood.send()
    for _ in range(3):
        flood.send()
    return flood, first


async def test_alone_a_sender_runs_its_whole_share_at_once() -> None:
    flood = Sender(shares(Clock()), "flooder")
    for _ in range(8):
        flood.send()
    await settle()
    assert len(flood.running) == 8


async def test_past_its_share_a_request_is_refused_at_once() -> None:
    s = shares(Clock(), per_user=2)
    flood = Sender(s, "flooder")
    flood.send(), flood.send()
    await settle()
    with pytest.raises(Problem) as refused:
        async with held(s, "flooder"):
            pass
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"


async def test_while_another_is_served_a_sender_runs_its_turns_in_order() -> None:
    s = shares(Clock())
    async with held(s, "quiet"):
        pass  # seen just now: still being served
    flood = Sender(s, "flooder")
    finishes = [flood.send() for _ in range(5)]
    await settle()
    # The first two began while it had no more in flight than it may run;
    # from the third it is heavy: the rest wait, and go one at a time.
    assert flood.running == finishes[:2]
    finishes[0].set()
    await settle()
    assert flood.running == finishes[:2]  # one of its own still runs
    finishes[1].set()
    await settle()
    assert flood.running == finishes[:3]  # the next in line, not any other
    finishes[2].set()
    await settle()
    # Two left in flight: no more than it may run, so both run at once.
    assert flood.running == finishes
    for finish in finishes:
        finish.set()
    await asyncio.gather(*flood.tasks)


async def test_while_another_is_served_a_light_sender_runs_all_it_sends() -> None:
    s = shares(Clock())
    async with held(s, "quiet"):
        pass
    page_and_wallet = Sender(s, "client")
    finishes = [page_and_wallet.send() for _ in range(2)]
    await settle()
    assert page_and_wallet.running == finishes
    for finish in finishes:
        finish.set()
    await asyncio.gather(*page_and_wallet.tasks)


async def test_a_heavy_sender_s_next_turn_waits_while_a_light_sender_s_request_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = shares(Clock(), running=1)
    flood, first = await four_beside_a_quiet_sender(s)
    quiet = Sender(s, "quiet")
    await settle()
    quiet_done = quiet.send()
    await settle()
    assert len(flood.running) == 1 and len(quiet.running) == 1
    first.set()  # the flooder's turn ends while the quiet request runs
    await settle()
    assert len(flood.running) == 1  # its next waits for the quiet one
    quiet_done.set()
    await settle()
    assert len(flood.running) == 2  # and starts once it has ended
    # Held no longer than HOLD_SECONDS once none of its own runs.
    monkeypatch.setattr(shares_module, "HOLD_SECONDS", 0.01)
    quiet_done = quiet.send()
    await settle()
    flood.running[1].set()
    await settle()
    assert len(flood.running) == 2
    await asyncio.sleep(0.05)
    assert len(flood.running) == 3
    quiet_done.set()
    for finish in flood.running:
        finish.set()
    await settle()
    for finish in flood.running:
        finish.set()
    await asyncio.gather(*flood.tasks, *quiet.tasks)


async def test_a_sender_seen_lately_counts_as_served_until_it_has_been_quiet_a_while() -> None:
    clock = Clock()
    s = shares(clock)
    async with held(s, "quiet"):
        pass
    flood = Sender(s, "flooder")
    for _ in range(4):
        flood.send()
    await settle()
    assert len(flood.running) == 2
    clock.now += ACTIVE_SECONDS + 0.1
    flood.running[0].set()  # a turn ends: the quiet sender has gone
    await settle()
    assert len(flood.running) == 4
    for finish in flood.running:
        finish.set()
    await asyncio.gather(*flood.tasks)


async def test_a_request_cancelled_while_waiting_or_just_given_its_turn_leaves_no_place() -> None:
    s = shares(Clock(), running=1)
    flood, first = await four_beside_a_quiet_sender(s)
    await settle()
    assert flood.running == [first]
    flood.tasks[1].cancel()  # while waiting
    await settle()
    first.set()
    await asyncio.sleep(0)
    # The third has been given its turn but has not run yet: cancelled now,
    # its turn passes to the fourth.
    flood.tasks[2].cancel()
    await settle()
    assert len(flood.running) == 2
    flood.running[1].set()
    results = await asyncio.gather(*flood.tasks, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [False, True, True, False]
