"""How many pending bills the bench writes before a pay run: enough that wrk
never runs out, even when the machine runs faster than in the last round."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench.config import BenchConfig
from bench.runner import Bench
from bench.wrk import WrkResult

KEY = ("voltpay", "pay", "postgres", 64)


@pytest.fixture
def bench() -> Iterator[Bench]:
    made = Bench(BenchConfig())
    yield made
    shutil.rmtree(made.workdir, ignore_errors=True)


def _ran(rps: float, *, wrapped: int = 0) -> WrkResult:
    return WrkResult(int(rps * 10), 10.0, 1.0, 2.0, 3.0, 4.0, 0, wrapped)


def test_a_round_after_a_slow_one_still_has_bills_for_a_machine_twice_as_fast(
    bench: Bench,
) -> None:
    bench._learn(KEY, _ran(250.0))
    # Seen on 2026-11-29: 250 req/s in one round, 690 in the next.
    assert bench._bills_for(KEY, 10) >= 690 * 10


def test_the_fastest_round_counts_not_the_last(bench: Bench) -> None:
    bench._learn(KEY, _ran(600.0))
    bench._learn(KEY, _ran(200.0))
    assert bench._bills_for(KEY, 10) >= 2 * 600 * 10


def test_a_run_that_ran_out_counts_as_faster_than_its_figure(bench: Bench) -> None:
    bench._learn(KEY, _ran(300.0, wrapped=1))
    assert bench._bills_for(KEY, 10) >= 2 * 600 * 10


def test_before_any_run_a_first_guess_or_a_faster_lower_level(bench: Bench) -> None:
    first = bench._bills_for(KEY, 10)
    assert first >= 2 * 1000 * 10
    bench._learn(("voltpay", "pay", "postgres", 16), _ran(5000.0))
    assert bench._bills_for(KEY, 10) >= 2 * 5000 * 10
    # Another database's rates say nothing about this one.
    bench._learn(("voltpay", "pay", "sqlite", 16), _ran(9000.0))
    assert bench._bills_for(KEY, 10) < 2 * 9000 * 10
