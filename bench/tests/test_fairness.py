"""The fairness part's plumbing: the quiet user's client, the flood's count of
429s, and the figures drawn from them (their values are the bench's to
measure, not these tests')."""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.cli import _parser, config_from
from bench.config import BenchConfig
from bench.fairness import FairnessSample, QuietRun, quiet_user
from bench.report import fairness_table, summary
from bench.runner import Results
from bench.wrk import run_wrk

WALLET = uuid.uuid4()


@pytest.fixture
async def fake_api() -> AsyncIterator[tuple[str, Counter[str]]]:
    """Lists refused (429), transactions served, pays and reads served except
    for one bill, and a count of what was asked."""
    seen: Counter[str] = Counter()
    refused_bill = "00000000-0000-0000-0000-000000000000"

    async def answer(request: web.Request) -> web.Response:
        seen[f"{request.method} {request.match_info.get('kind', request.path)}"] += 1
        if request.headers.get("Authorization") != "Bearer t0ken":
            return web.Response(status=401)
        if request.path == "/api/bills" or refused_bill in request.path:
            return web.Response(status=429)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/bills", answer)
    app.router.add_get("/api/wallets/{id}/{kind:transactions}", answer)
    app.router.add_post("/api/Vend/{id}/{kind:pay}", answer)
    app.router.add_get("/api/bills/{id}", answer)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), seen


async def test_the_flood_alternates_its_lists_and_counts_the_429s(
    fake_api: tuple[str, Counter[str]], tmp_path: Path
) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    url, seen = fake_api
    data = tmp_path / "flood.txt"
    data.write_text(f"t0ken {WALLET}\n")
    result = await run_wrk(
        url, connections=2, duration=1, mode="lists", data_file=data, statuses=True
    )
    lists, transactions = seen["GET /api/bills"], seen["GET transactions"]
    assert lists > 0 and transactions > 0
    assert abs(lists - transactions) <= 2
    # wrk stops with requests still unanswered; every answered list was a 429.
    assert 0 < result.too_many <= lists
    assert result.too_many >= lists - 2


async def test_without_statuses_no_429_is_counted(
    fake_api: tuple[str, Counter[str]], tmp_path: Path
) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    url, _ = fake_api
    data = tmp_path / "flood.txt"
    data.write_text(f"t0ken {WALLET}\n")
    result = await run_wrk(url, connections=1, duration=1, mode="lists", data_file=data)
    assert result.too_many == 0 and result.errors > 0


async def test_the_quiet_user_pays_then_reads_each_bill_and_counts_refusals(
    fake_api: tuple[str, Counter[str]],
) -> None:
    url, seen = fake_api
    bills = [uuid.uuid4() for _ in range(3)] + [uuid.UUID(int=0)] + [uuid.uuid4() for _ in range(9)]
    run = await quiet_user(url, "t0ken", bills, seconds=0.5, rate=20, warm=3)
    # Ten ticks in half a second at 20 a second; the three warm-up pays are
    # not recorded.
    assert len(run.pay_ms) == len(run.get_ms) == 10
    assert seen["POST pay"] == 13 and seen["GET /api/bills/" + str(bills[3])] == 1
    assert run.failures == 2  # the refused bill's pay and read


def _sample(flood: str, state: str, number: int, p50: float, p99: float) -> FairnessSample:
    sample = FairnessSample.of(
        "postgres", flood, state, number, QuietRun(pay_ms=[p50] * 98 + [p99] * 2, get_ms=[1.0])
    )
    if state == "flooded":
        sample.flood_requests, sample.flood_too_many, sample.flood_rps = 1000, 750, 100.0
    return sample


def test_each_rounds_pair_gives_a_ratio_and_the_worse_flood_decides() -> None:
    results = Results(BenchConfig())
    results.fairness = [
        _sample("lists", "alone", 0, 4.0, 10.0),
        _sample("lists", "flooded", 0, 6.0, 20.0),
        _sample("lists", "flooded", 1, 10.0, 30.0),  # a slower machine in round 1
        _sample("lists", "alone", 1, 8.0, 20.0),
        _sample("verify", "alone", 0, 4.0, 10.0),
        _sample("verify", "flooded", 0, 8.0, 15.0),
    ]
    results.fairness[-1].quiet_failures = 2
    figures = summary(results)
    assert figures["fairness_lists_pg_quiet_p50_ratio"] == pytest.approx((1.5 + 1.25) / 2)
    assert figures["fairness_lists_pg_quiet_p99_ratio"] == pytest.approx(1.75)
    assert figures["fairness_verify_pg_quiet_p50_ratio"] == pytest.approx(2.0)
    assert figures["fairness_quiet_p50_ratio_pg"] == pytest.approx(2.0)
    assert figures["fairness_quiet_p99_ratio_pg"] == pytest.approx(1.75)
    assert figures["fairness_lists_pg_flood_429_share"] == pytest.approx(0.75)
    assert figures["fairness_quiet_failures"] == 2
    assert figures["fairness_quiet_p50_ratio_sqlite"] is None
    assert "750 of 1000" in "\n".join(fairness_table(results))


def test_a_run_without_the_part_has_no_fairness_figures() -> None:
    figures = summary(Results(BenchConfig()))
    assert figures["fairness_quiet_p50_ratio_pg"] is None
    assert figures["fairness_quiet_failures"] is None


def test_the_part_is_chosen_with_only() -> None:
    config = config_from(_parser().parse_args(["--only", "fairness"]))
    assert config.wants("fairness") and not config.wants("pay")
    assert BenchConfig().wants("fairness")  # part of the default run
