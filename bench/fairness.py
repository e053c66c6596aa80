"""A quiet user beside another user's flood: what one client sees.

The quiet user pays one of its bills and then reads it back (GET
/api/bills/{id}, as a client shows the receipt), on one connection, at a
steady pace, and records each request's latency. The same user is measured
alone and while another user floods the daemon with wrk, in turns; the
flooded/alone ratios are the figures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

from bench.stats import percentile

FLOODS = ("lists", "verify")  # wrk modes of the flooding user (bench/lua/api.lua)


@dataclass
class QuietRun:
    """One window of the quiet user's requests: latencies in ms."""

    pay_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    failures: int = 0  # answers other than 200 (a 429 here is a share gone wrong)


@dataclass
class FairnessSample:
    database: str
    flood: str  # lists or verify
    state: str  # alone or flooded
    round: int
    pays: int
    pay_p50_ms: float
    pay_p99_ms: float
    pay_max_ms: float
    get_p50_ms: float
    get_p99_ms: float
    quiet_failures: int
    # The flooding user's wrk run (flooded windows only).
    flood_requests: int = 0
    flood_rps: float = 0.0
    flood_too_many: int = 0  # answered 429

    @classmethod
    def of(
        cls, database: str, flood: str, state: str, number: int, run: QuietRun
    ) -> FairnessSample:
        return cls(
            database,
            flood,
            state,
            number,
            len(run.pay_ms),
            percentile(run.pay_ms, 0.5),
            percentile(run.pay_ms, 0.99),
            max(run.pay_ms, default=0.0),
            percentile(run.get_ms, 0.5),
            percentile(run.get_ms, 0.99),
            run.failures,
        )


async def _timed(
    session: aiohttp.ClientSession, method: str, path: str, token: str
) -> tuple[float, int]:
    began = time.perf_counter()
    async with session.request(method, path, headers={"Authorization": f"Bearer {token}"}) as reply:
        await reply.read()
    return (time.perf_counter() - began) * 1000, reply.status


async def quiet_user(
    base_url: str,
    token: str,
    bills: list[uuid.UUID],
    *,
    seconds: float,
    rate: float,
    warm: int = 3,
) -> QuietRun:
    """Pay-then-read ``rate`` times a second for ``seconds`` (one bill each,
    from ``bills``; the first ``warm`` are not recorded). A request that
    overruns its tick delays the next one, as it would for a real client."""
    run = QuietRun()
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        base_url=base_url, connector=connector, timeout=timeout
    ) as session:
        for bill in bills[:warm]:
            await _timed(session, "POST", f"/api/Vend/{bill}/pay", token)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for number, bill in enumerate(bills[warm:]):
            due = start + number / rate
            if due >= start + seconds:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            pay_ms, status = await _timed(session, "POST", f"/api/Vend/{bill}/pay", token)
            run.pay_ms.append(pay_ms)
            run.failures += status != 200
            get_ms, status = await _timed(session, "GET", f"/api/bills/{bill}", token)
            run.get_ms.append(get_ms)
            run.failures += status != 200
    return run
