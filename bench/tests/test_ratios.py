"""The bench's ratios: each round's pair, run back to back and in alternating
order, gives one ratio; the figure is their median. And how much CPU time the
hypervisor took while they ran, which says how far to trust them."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from bench.config import BenchConfig
from bench.procs import machine_ticks, steal_share
from bench.report import http_rows, http_table, steal_lines, summary, targets
from bench.runner import (
    Bench,
    DrainSample,
    HttpSample,
    PipelineSample,
    Results,
    Service,
    Stage,
)
from bench.stats import in_turns, paired_ratios
from bench.wrk import WrkResult


def test_the_first_side_alternates_from_round_to_round() -> None:
    assert [in_turns(n, "voltpay", "ceiling") for n in range(4)] == [
        ("voltpay", "ceiling"),
        ("ceiling", "voltpay"),
        ("voltpay", "ceiling"),
        ("ceiling", "voltpay"),
    ]


def test_of_three_sides_the_middle_one_runs_next_to_each_of_the_others() -> None:
    assert [in_turns(n, "peer", "voltpay", "ceiling") for n in range(3)] == [
        ("peer", "voltpay", "ceiling"),
        ("ceiling", "voltpay", "peer"),
        ("peer", "voltpay", "ceiling"),
    ]


def test_paired_ratios_match_rounds_and_skip_the_unpaired() -> None:
    assert paired_ratios({0: 50.0, 1: 60.0, 2: 70.0}, {2: 140.0, 0: 100.0}) == [0.5, 0.5]
    assert paired_ratios({0: 50.0}, {0: 0.0}) == []
    assert paired_ratios({0: None}, {0: 10.0}) == []


def _http(system: str, number: int, rps: float) -> HttpSample:
    return HttpSample("pay", system, "postgres", 64, number, rps, 10.0, 20.0, 1000, 0, 0)


def _results(*samples: HttpSample) -> Results:
    results = Results(BenchConfig(connections=[64]))
    results.http = list(samples)
    return results


def test_a_disturbed_round_on_a_machine_that_speeds_up_leaves_the_ratio_alone() -> None:
    # voltpay is 0.6 of its ceiling while the machine speeds up from round to
    # round; in round 1 something else takes the machine during voltpay's turn.
    results = _results(
        _http("voltpay", 0, 600.0),
        _http("ceiling", 0, 1000.0),
        _http("ceiling", 1, 1100.0),
        _http("voltpay", 1, 300.0),
        _http("voltpay", 2, 720.0),
        _http("ceiling", 2, 1200.0),
    )
    [row] = http_rows(results)
    assert row.round_ratios == pytest.approx((0.6, 300 / 1100, 0.6))
    assert row.ratio == pytest.approx(0.6)
    # The two medians come from different rounds: round 0's voltpay against
    # round 1's ceiling.
    assert row.ratio_of_medians == pytest.approx(600 / 1100)
    figures = summary(results)
    assert figures["pay_pg_ratio"] == pytest.approx(0.6)
    assert figures["pay_pg_ratio_of_medians"] == pytest.approx(600 / 1100)
    assert figures["pay_pg_round_ratios"] == pytest.approx([0.6, 300 / 1100, 0.6])


def test_one_disturbed_round_does_not_move_the_median() -> None:
    results = _results(
        _http("voltpay", 0, 500.0),
        _http("ceiling", 0, 1000.0),
        _http("voltpay", 1, 520.0),
        _http("ceiling", 1, 300.0),  # something else took the machine
        _http("voltpay", 2, 480.0),
        _http("ceiling", 2, 1000.0),
    )
    assert summary(results)["pay_pg_ratio"] == pytest.approx(0.5)


def _pipeline(
    kind: str, number: int, events_per_s: float, p99_ms: float, database: str = "sqlite"
) -> PipelineSample:
    return PipelineSample(kind, database, number, 500, 500, 1.0, events_per_s, 1.0, p99_ms)


def test_pipeline_ratios_are_paired_by_round() -> None:
    results = Results(BenchConfig())
    results.pipeline = [
        _pipeline("voltpay-embedded", 0, 90.0, 2000.0),
        _pipeline("ceiling-embedded", 0, 100.0, 1000.0),
        _pipeline("voltpay-embedded", 1, 180.0, 1100.0),
        _pipeline("ceiling-embedded", 1, 200.0, 1000.0),
        _pipeline("voltpay-embedded", 2, 45.0, 1200.0),
        _pipeline("ceiling-embedded", 2, 50.0, 1000.0),
    ]
    figures = summary(results)
    assert figures["pipeline_sqlite_ratio"] == pytest.approx(0.9)
    assert figures["pipeline_ratio"] == pytest.approx(0.9)
    assert figures["sms_p99_sqlite_ratio"] == pytest.approx(1.2)
    assert figures["pipeline_sqlite_ratio_of_medians"] == pytest.approx(0.9)


def test_the_pipeline_is_set_against_the_pay_rate_and_its_own_depth() -> None:
    config = BenchConfig(databases=["postgres"], connections=[64])
    results = Results(config)
    results.http = [
        HttpSample("pay", "voltpay", "postgres", 64, 0, 1000.0, 50.0, 90.0, 10000, 0, 0, None, 4.0),
        HttpSample("pay", "voltpay", "postgres", 64, 1, 900.0, 50.0, 90.0, 9000, 0, 0, None, 2.0),
    ]
    results.pipeline = [
        _pipeline("voltpay-embedded", 0, 760.0, 1000.0, "postgres"),
        _pipeline("voltpay-shallow", 0, 800.0, 1000.0, "postgres"),
        _pipeline("voltpay-deep", 0, 600.0, 1000.0, "postgres"),
    ]
    figures = summary(results)
    assert figures["pipeline_vs_pay_pg"] == pytest.approx(760 / 950)
    assert figures["sms_lag_after_pay_s_pg"] == pytest.approx(3.0)
    assert figures["pipeline_depth_10k_ratio"] == pytest.approx(0.75)
    verdicts = targets(figures)
    assert verdicts["pipeline_vs_pay_pg"]["met"] is True
    assert verdicts["sms_lag_after_pay_s_pg"]["met"] is False
    assert verdicts["pipeline_depth_10k_ratio"]["met"] is False


def test_the_drain_drop_pairs_each_round_idle_and_draining() -> None:
    results = Results(BenchConfig())
    results.drain = [
        DrainSample("idle", 0, 400.0, 20.0, 0, 4000, 0),
        DrainSample("draining", 0, 360.0, 25.0, 5000, 4500, 2000),
        DrainSample("draining", 1, 180.0, 25.0, 5000, 4500, 2000),
        DrainSample("idle", 1, 200.0, 20.0, 0, 2000, 0),
    ]
    figures = summary(results)
    assert figures["pay_drop_during_drain"] == pytest.approx(0.1)
    assert figures["pay_drop_during_drain_of_medians"] == pytest.approx(1 - 270 / 300)


def test_stolen_time_is_read_and_shared_out() -> None:
    ticks = machine_ticks()
    assert ticks is not None  # Linux has /proc/stat
    total, stolen = ticks
    assert 0 <= stolen <= total
    assert steal_share((100, 10), (200, 30)) == pytest.approx(0.2)
    assert steal_share(None, (200, 30)) is None
    assert steal_share((200, 30), (200, 30)) is None


def test_the_report_says_how_much_time_was_stolen() -> None:
    samples = [_http("voltpay", 0, 500.0), _http("ceiling", 0, 1000.0)]
    assert steal_lines(_results(*samples)) == []
    samples[0].steal, samples[1].steal = 0.02, 0.30
    [line] = steal_lines(_results(*samples))
    assert "median 16.0%" in line and "at most 30.0% at 64 connections" in line
    assert "less reliable" in line


def test_voltpay_over_the_peer_is_the_median_of_the_rounds_ratios() -> None:
    results = _results(
        _http("peer", 0, 300.0),
        _http("voltpay", 0, 1200.0),
        _http("ceiling", 0, 1500.0),
        _http("ceiling", 1, 1400.0),
        _http("voltpay", 1, 1050.0),
        _http("peer", 1, 350.0),
        _http("peer", 2, 100.0),  # something else took the machine
        _http("voltpay", 2, 1100.0),
        _http("ceiling", 2, 1600.0),
    )
    results.http[0].p99_ms = 150.0
    [row] = http_rows(results)
    assert row.peer_round_ratios == pytest.approx((4.0, 3.0, 11.0))
    assert row.peer_ratio == pytest.approx(4.0)
    figures = summary(results)
    assert figures["pay_pg_vs_fastapi"] == pytest.approx(4.0)
    assert figures["pay_pg_vs_fastapi_round_ratios"] == pytest.approx([4.0, 3.0, 11.0])
    assert figures["pay_pg_vs_fastapi_ratio_of_medians"] == pytest.approx(1100 / 300)
    assert figures["pay_pg_peer_rps"] == pytest.approx(300.0)
    assert figures["pay_pg_peer_p99_ms"] == pytest.approx(20.0)
    # The ceiling's ratio is still voltpay's against the ceiling's alone.
    assert figures["pay_pg_ratio"] == pytest.approx(0.75)
    verdict = targets(figures)["pay_pg_vs_fastapi"]
    assert (verdict["target"], verdict["met"]) == (">= 3.5", True)
    header, _, line = http_table(results)
    assert "| peer req/s | p99 ms | voltpay/peer | by round |" in header
    assert "| 300.0 | 20.00 | 4.00 | 4.00, 3.00, 11.00 |" in line


def test_without_the_peer_its_target_is_not_run() -> None:
    figures = summary(_results(_http("voltpay", 0, 500.0), _http("ceiling", 0, 1000.0)))
    assert figures["pay_pg_vs_fastapi"] is None
    assert figures["pay_pg_peer_rps"] is None
    assert targets(figures)["pay_pg_vs_fastapi"]["met"] is None
    [_, _, line] = http_table(_results(_http("voltpay", 0, 500.0), _http("ceiling", 0, 1000.0)))
    assert "| - | - | - | - |" in line


class _Drained:
    """A database whose pipeline is always empty."""

    async def wait_drained(self, timeout: float) -> bool:
        return True


async def test_pay_runs_the_peer_beside_voltpay_and_its_ceiling_at_every_level() -> None:
    config = BenchConfig(connections=[1, 16, 64], rounds=2, warmup=0)
    bench = Bench(config)
    ran: list[tuple[str, int]] = []

    async def wrk_pay(
        service: Service, system: str, database: str, db: Any, connections: int
    ) -> WrkResult:
        assert service.port == {"voltpay": 1, "ceiling": 2, "peer": 3}[system]
        ran.append((system, connections))
        return WrkResult(100, 1.0, 1.0, 2.0, 3.0, 4.0, 0, 0)

    async def quiet() -> None:
        pass

    bench._wrk_pay = wrk_pay  # type: ignore[method-assign]
    voltpay, ceiling, peer = (Service(None, port) for port in (1, 2, 3))  # type: ignore[arg-type]
    stage = Stage("postgres", _Drained(), voltpay, quiet)  # type: ignore[arg-type]
    try:
        await bench._pairs(stage, "pay", ceiling, peer)
    finally:
        shutil.rmtree(bench.workdir, ignore_errors=True)

    order = ["peer", "voltpay", "ceiling"]
    assert ran == [
        *((system, 1) for system in order),
        *((system, 16) for system in order),
        *((system, 64) for system in order),
        *((system, 64) for system in reversed(order)),
    ]
    peer_rounds = [(s.connections, s.round) for s in bench.results.http if s.system == "peer"]
    assert peer_rounds == [(1, 0), (16, 0), (64, 0), (64, 1)]
    assert {s.database for s in bench.results.http} == {"postgres"}
