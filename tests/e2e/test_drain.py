"""Graceful drain under load: SIGTERM with pay requests in flight loses none
of them, and nothing they set in motion is lost across a restart."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.client import Api, eventually
from tests.e2e.conftest import (
    TOKEN_PATTERN,
    Daemons,
    external_aws_env,
    last_value,
    ledger_sum,
)

BILLS = 20
AMOUNT = Decimal("25.00")
FUNDS = AMOUNT * BILLS + Decimal("10.00")


async def _readiness_withdrawn(http: aiohttp.ClientSession, base_url: str) -> bool:
    """True once /readyz answers 503 or nothing listens any more."""
    try:
        async with http.get(
            base_url + "/readyz",
            headers={"Connection": "close"},
            timeout=aiohttp.ClientTimeout(total=1),
        ) as response:
            return response.status == 503
    except (aiohttp.ClientConnectionError, TimeoutError):
        return True


@pytest.fixture(
    params=[
        # What `voltpay run` does with nothing configured.
        pytest.param(("sqlite", "embedded"), id="sqlite-embedded"),
        # The production shape: PostgreSQL and an SNS/SQS outside the process.
        pytest.param(("postgres", "external"), id="postgres-external"),
    ]
)
def deployment_env(request: pytest.FixtureRequest) -> dict[str, str]:
    database, bus = request.param
    env: dict[str, str] = {}
    if database == "postgres":
        env["VOLTPAY_DATABASE__URL"] = request.getfixturevalue("pg_database")
    if bus == "external":
        env.update(external_aws_env(request.getfixturevalue("external_aws_url")))
    return env


async def test_sigterm_under_load_drains_every_payment(
    daemons: Daemons, http: aiohttp.ClientSession, deployment_env: dict[str, str]
) -> None:
    env = {
        **deployment_env,
        "VOLTPAY_PROVIDER__LATENCY_SECONDS": "0.3",
        # One user's payments all in flight at once: the drain is what is tested.
        "VOLTPAY_HTTP__MAX_IN_FLIGHT_PER_USER": str(2 * BILLS),
    }
    first = daemons.start(env)
    await first.wait_ready(http)
    api = Api(http, first.base_url)
    await api.register_and_login()
    await api.add_funds(f"{FUNDS}")
    bill_ids = [(await api.verify(f"{AMOUNT}"))["billId"] for _ in range(BILLS)]

    # One connection per request, so none waits for a pooled one.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as load:
        payer = Api(load, first.base_url, api.who)
        pays = [
            asyncio.create_task(payer.call("POST", f"/api/Vend/{bill_id}/pay"))
            for bill_id in bill_ids
        ]
        try:
            # In flight: every request has reached the bills agent (its bill
            # left "pending") and at least one has not been answered yet.
            async def all_taken() -> bool:
                page = await api.expect(200, "GET", f"/api/bills?limit={BILLS + 5}")
                return all(item["status"] != "pending" for item in page["items"])

            await eventually(all_taken, timeout=10, interval=0.02, what="every pay to start")
            unanswered = sum(not task.done() for task in pays)
            if unanswered == 0:
                pytest.fail("every pay was answered before SIGTERM: nothing was in flight")
            first.send(signal.SIGTERM)
            signalled = time.monotonic()

            await eventually(
                lambda: _readiness_withdrawn(http, first.base_url),
                timeout=2,
                interval=0.02,
                what="/readyz to stop answering 200 after SIGTERM",
            )
            assert time.monotonic() - signalled < 2
            outcomes: list[Any] = await asyncio.gather(*pays, return_exceptions=True)
        finally:
            for task in pays:
                task.cancel()
            await asyncio.gather(*pays, return_exceptions=True)

    failures = [
        (bill_id, outcome)
        for bill_id, outcome in zip(bill_ids, outcomes, strict=True)
        if isinstance(outcome, BaseException) or outcome.status != 200
    ]
    assert not failures, (
        f"{len(failures)} of {BILLS} pays failed ({unanswered} were unanswered at SIGTERM): "
        f"{failures}"
    )
    paid = {}
    for bill_id, outcome in zip(bill_ids, outcomes, strict=True):
        body = outcome.body
        assert body["billId"] == bill_id
        assert body["status"] == "paid", body
        assert re.fullmatch(TOKEN_PATTERN, body["token"]), body
        paid[bill_id] = body
    assert await first.wait_exit(30) == 0

    second = daemons.start(env)
    await second.wait_ready(http)
    api.base_url = second.base_url
    for bill_id in bill_ids:
        bill = await api.get_bill(bill_id)
        assert bill["status"] == "paid", bill
        assert bill["token"] == paid[bill_id]["token"]
        assert bill["receiptNumber"] == paid[bill_id]["receiptNumber"]
    balance = Decimal(await api.balance())
    assert balance == FUNDS - AMOUNT * BILLS
    transactions = await api.transactions()
    assert sorted(t["kind"] for t in transactions) == ["credit"] + ["debit"] * BILLS
    assert balance == ledger_sum(transactions)

    # The receipt number tells the payments' SMS apart (equal amounts can
    # share a token, see test_walkthrough).
    async def untexted() -> set[str]:
        texted = [
            n["body"] for n in await api.notifications() if n["eventType"] == "payment_completed"
        ]
        return {
            bill_id
            for bill_id, bill in paid.items()
            if not any(bill["receiptNumber"] in body and bill["token"] in body for body in texted)
        }

    missing = await last_value(untexted, lambda missing: not missing, timeout=10)
    if missing:
        async with http.get(second.base_url + "/metrics") as response:
            waiting = re.search(
                r"^voltpay_outbox_waiting_rows (\S+)$", await response.text(), re.MULTILINE
            )
        pytest.fail(
            f"{len(missing)} of {BILLS} payment_completed SMS did not arrive within 10 s of "
            f"the restart; the outbox still holds {waiting.group(1) if waiting else '?'} "
            f"unpublished rows (bills {sorted(missing)})"
        )
    completed = [n for n in await api.notifications() if n["eventType"] == "payment_completed"]
    assert len(completed) == BILLS, f"{len(completed)} payment_completed SMS for {BILLS} payments"

    second.send(signal.SIGTERM)
    assert await second.wait_exit(30) == 0


async def test_a_drain_delay_keeps_serving_unready_before_the_listener_closes(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    """With ``http.drain_delay_seconds``, SIGTERM first withdraws readiness while
    requests are still served, each answer closing its connection so that
    clients reconnect elsewhere; only after the delay does the listener close."""
    # Long enough for the checks below to run inside it on a slow machine.
    delay = 5.0
    daemon = daemons.start({"VOLTPAY_HTTP__DRAIN_DELAY_SECONDS": f"{delay}"})
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)
    await api.register_and_login()

    # A kept-alive connection, as a load balancer or client pool holds.
    async with aiohttp.ClientSession() as kept:
        async with kept.get(daemon.base_url + "/readyz") as response:
            assert response.status == 200
            assert response.headers.get("Connection", "").lower() != "close"
        daemon.send(signal.SIGTERM)
        signalled = time.monotonic()

        async def unready() -> bool:
            async with kept.get(daemon.base_url + "/readyz") as response:
                return response.status == 503

        await eventually(unready, timeout=3, interval=0.02, what="/readyz to answer 503")
        async with kept.get(daemon.base_url + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "draining"
            assert response.headers["Connection"].lower() == "close"
        # Still served during the delay.
        me = await api.expect(200, "GET", "/api/me")
        assert me["username"]
        served_until = time.monotonic()
        assert served_until - signalled < delay

        async def refused() -> bool:
            try:
                async with kept.get(
                    daemon.base_url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)
                ):
                    return False
            except aiohttp.ClientConnectionError:
                return True

        await eventually(refused, timeout=delay + 5, interval=0.05, what="the listener to close")
        assert time.monotonic() - signalled >= delay
    assert await daemon.wait_exit(30) == 0
