"""The pipeline's pacer: no limit while nothing arrives; while events arrive,
at most factor x their rate plus the floor, in bursts of at most two batches;
only the floor while told to yield. And the load it yields to: requests in
flight while the process's CPU is busy."""

from __future__ import annotations

import pytest

from tests.fakes.clock import Clock
from voltpay.agents.pacing import BURST, WINDOW_SECONDS, Arrivals, Load, Pacer


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


def take_for_a_second(pacer: Pacer, clock: Clock, per_second: int) -> int:
    """Events keep arriving; take all that is allowed every 10 ms."""
    taken = 0
    for _ in range(100):
        pacer.arrived(per_second // 100)
        clock.now += 0.01
        granted = pacer.allowance(10_000)
        pacer.spend(granted)
        taken += granted
    return taken


def test_a_pacer_told_to_yield_takes_only_the_floor_and_resumes_its_pace_after() -> None:
    clock = Clock()
    yielding = True
    pacer = Pacer(factor=1.25, floor_per_second=50, clock=clock, yield_to=lambda: yielding)
    arrive(pacer, clock, per_second=400, seconds=WINDOW_SECONDS)
    pacer.spend(pacer.allowance(10_000))

    assert 40 <= take_for_a_second(pacer, clock, per_second=400) <= 51
    assert pacer.yielding
    # Asked how long to wait for a batch, it counts at the floor's pace.
    assert pacer.delay(10) == pytest.approx(10 / 50, abs=0.02)

    yielding = False
    assert 450 <= take_for_a_second(pacer, clock, per_second=400) <= 560
    assert not pacer.yielding


def test_a_yielding_pacer_sets_no_limit_once_nothing_arrives() -> None:
    clock = Clock()
    pacer = Pacer(factor=1.25, floor_per_second=50, clock=clock, yield_to=lambda: True)
    arrive(pacer, clock, per_second=400, seconds=WINDOW_SECONDS)
    pacer.spend(pacer.allowance(10_000))
    assert pacer.allowance(10_000) < BURST
    assert pacer.yielding
    clock.now += WINDOW_SECONDS + 0.01
    assert pacer.allowance(10_000) == 10_000
    assert not pacer.yielding


class Cpu:
    """Process CPU seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.used = 5.0

    def __call__(self) -> float:
        return self.used


def run(clock: Clock, cpu: Cpu, seconds: float, share: float) -> None:
    clock.now += seconds
    cpu.used += seconds * share


def test_the_load_is_busy_only_with_requests_in_flight_while_the_cpu_is_busy() -> None:
    clock, cpu = Clock(), Cpu()
    in_flight = 0
    load = Load(lambda: in_flight, requests=8, cpu_share=0.8, clock=clock, cpu_clock=cpu)

    run(clock, cpu, 0.3, share=0.95)
    assert not load.busy()  # no requests waiting: the CPU is the pipeline's own
    assert load.cpu_share() == pytest.approx(0.95)

    in_flight = 7
    run(clock, cpu, 0.3, share=0.95)
    assert not load.busy()
    in_flight = 8
    assert load.busy()

    run(clock, cpu, 0.3, share=0.3)
    assert not load.busy()  # requests waiting on something else (the database)

    run(clock, cpu, 0.3, share=0.9)
    assert load.busy()
    # Within a window the share read last stands.
    run(clock, cpu, 0.1, share=0.0)
    assert load.busy()


def test_the_load_forgets_a_window_nobody_asked_about() -> None:
    clock, cpu = Clock(), Cpu()
    load = Load(lambda: 64, requests=8, clock=clock, cpu_clock=cpu)
    run(clock, cpu, 0.3, share=1.0)
    assert load.busy()
    run(clock, cpu, 60, share=0.9)  # a minute unasked: says nothing of now
    assert not load.busy()
    run(clock, cpu, 0.3, share=0.9)
    assert load.busy()


def test_a_load_with_no_request_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Load(lambda: 0, requests=0)
