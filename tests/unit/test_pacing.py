"""The pipeline's pacer: no limit while nothing arrives; while events arrive,
at most factor x their rate plus the floor, in bursts of at most two batches."""

from __future__ import annotations

import pytest

from tests.fakes.clock import Clock
from voltpay.agents.pacing import BURST, WINDOW_SECONDS, Arrivals, Pacer


def arrive(pacer: Pacer, clock: Clock, per_second: int, seconds: float) -> None:
    """Events at a steady rate, one commit every 10 ms."""
    for _ in range(int(seconds * 100)):
        pacer.arrived(per_second // 100)
        clock.now += 0.01


def test_with_nothing_arriving_everything_may_go() -> None:
    pacer = Pacer(factor=1.25, floor_per_second=50, clock=Clock())
    assert pacer.allowance(10_000) == 10_000
    assert pacer.delay(10_000) == 0.0


def test_while_events_arrive_the_pace_is_factor_times_their_rate_plus_the_floor() -> None:
    clock = Clock()
    pacer = Pacer(factor=1.25, floor_per_second=50, clock=clock)
    arrive(pacer, clock, per_second=400, seconds=WINDOW_SECONDS)
    assert pacer.arrival_rate() == pytest.approx(400, rel=0.15)

    taken = 0
    pacer.spend(pacer.allowance(10_000))  # whatever was saved up before
    for _ in range(100):  # one second, taking all that is allowed every 10 ms
        pacer.arrived(4)
        clock.now += 0.01
        granted = pacer.allowance(10_000)
        assert granted <= BURST
        pacer.spend(granted)
        taken += granted
    # 1.25 x 400 + 50 = 550 a second; the window's partly filled bucket reads
    # the rate a little low.
    assert 450 <= taken <= 560


def test_a_paced_user_is_told_how_long_to_wait_for_a_batch() -> None:
    clock = Clock()
    pacer = Pacer(factor=1.0, floor_per_second=10, clock=clock)
    arrive(pacer, clock, per_second=100, seconds=WINDOW_SECONDS)
    pacer.spend(pacer.allowance(10_000))
    wait = pacer.delay(10)
    assert 0.05 < wait < 0.15  # 10 events at about 110 a second
    waited = 0.0
    for _ in range(3):  # the rate read moves a little as the window slides
        if pacer.allowance(10) == 10:
            break
        wait = pacer.delay(10)
        clock.now += wait
        waited += wait
    assert pacer.allowance(10) == 10
    assert 0.05 < waited < 0.2


def test_savings_are_capped_at_two_batches() -> None:
    clock = Clock()
    pacer = Pacer(factor=1.25, floor_per_second=50, clock=clock)
    arrive(pacer, clock, per_second=200, seconds=1.0)
    clock.now += 0.5  # half a second without taking anything
    pacer.arrived(1)
    assert pacer.allowance(10_000) == BURST


def test_once_events_stop_arriving_the_limit_goes() -> None:
    clock = Clock()
    pacer = Pacer(factor=1.25, floor_per_second=50, clock=clock)
    arrive(pacer, clock, per_second=300, seconds=1.0)
    pacer.spend(pacer.allowance(10_000))
    assert pacer.allowance(10_000) < 10_000
    clock.now += WINDOW_SECONDS + 0.01
    assert pacer.allowance(10_000) == 10_000


def test_a_factor_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Pacer(factor=0.9, floor_per_second=50)


def test_pacers_sharing_arrivals_each_keep_their_own_allowance() -> None:
    clock = Clock()
    arrivals = Arrivals(clock)
    relay = Pacer(factor=1.25, floor_per_second=50, arrivals=arrivals)
    poller = Pacer(factor=1.25, floor_per_second=50, arrivals=arrivals)
    for _ in range(100):  # 300 commits a second, counted once
        arrivals.arrived(3)
        clock.now += 0.01
    assert relay.arrival_rate() == poller.arrival_rate() == arrivals.rate()
    relay.spend(relay.allowance(10_000))
    assert relay.allowance(10) == 0
    assert poller.allowance(10) == 10  # the relay's spending is not the poller's
