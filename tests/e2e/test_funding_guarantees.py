"""Gateway funding's guarantees with the daemon as a subprocess, two daemons
on one database (SQLite and PostgreSQL) behind one fake Paystack: one credit
per reference whatever arrives where, and a daemon killed (SIGKILL) between
a webhook's arrival and its credit loses nothing and credits once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.client import Api, Customer, eventually, expected
from tests.e2e.conftest import DaemonProcess, Daemons, external_aws_env, ledger_sum
from tests.fakes.paystack_server import FakePaystackServer

SECRET = "sk_test_" + "1" * 40
WEBHOOK = "/api/gateway/paystack/webhook"


@pytest.fixture
async def paystack() -> AsyncIterator[FakePaystackServer]:
    async with FakePaystackServer(secret_key=SECRET) as fake:
        yield fake


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    url: str = request.getfixturevalue("pg_database")
    return url


def gateway_env(
    paystack: FakePaystackServer, database_url: str, aws_url: str, reconcile_after: str
) -> dict[str, str]:
    return {
        "VOLTPAY_DATABASE__URL": database_url,
        **external_aws_env(aws_url),
        "VOLTPAY_FUNDING__MODE": "gateway",
        "VOLTPAY_FUNDING__GATEWAY_URL": paystack.base_url,
        "VOLTPAY_FUNDING__SECRET_KEY": SECRET,
        "VOLTPAY_FUNDING__CALLBACK_URL": "https://shop.example.com/funded",
        "VOLTPAY_FUNDING__RECONCILE_AFTER_SECONDS": reconcile_after,
        "VOLTPAY_FUNDING__RECONCILE_INTERVAL_SECONDS": "0.3",
    }


async def two_daemons(
    daemons: Daemons, http: aiohttp.ClientSession, env: dict[str, str]
) -> tuple[DaemonProcess, DaemonProcess]:
    """The first ready (it migrates a fresh SQLite file alone), then the second."""
    first = daemons.start(env)
    await first.wait_ready(http)
    second = daemons.start(env)
    await second.wait_ready(http)
    return first, second


async def post_webhook(
    http: aiohttp.ClientSession, base_url: str, body: bytes, signature: str
) -> int:
    async with http.post(
        base_url + WEBHOOK,
        data=body,
        headers={"Content-Type": "application/json", "x-paystack-signature": signature},
    ) as response:
        return response.status


async def credited(api: Api, who: Customer, amount: str) -> list[dict[str, Any]] | None:
    page = await api.expect(
        200, "GET", f"/api/wallets/{who.wallet_id}/transactions?limit=100", customer=who
    )
    items: list[dict[str, Any]] = page["items"]
    return items if await api.balance(who) == amount else None


async def test_webhooks_to_two_daemons_in_parallel_credit_once(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    paystack: FakePaystackServer,
    database_url: str,
    separate_aws_url: str,
) -> None:
    env = gateway_env(paystack, database_url, separate_aws_url, "3600")
    first, second = await two_daemons(daemons, http, env)
    api = Api(http, first.base_url)
    who = await api.customer()
    funding = expected(await api.fund(who, "700.00"), 201, "start a funding")
    paystack.pay(funding["reference"])
    body, signature = paystack.charge_success(funding["reference"])
    statuses = await asyncio.gather(
        *(post_webhook(http, daemon.base_url, body, signature) for daemon in [first, second] * 10)
    )
    assert statuses == [200] * 20
    items = await eventually(lambda: credited(api, who, "700.00"), what="the credit")
    assert [(i["kind"], i["source"]) for i in items] == [("credit", "gateway")]
    assert ledger_sum(items) == Decimal("700.00")
    # The customer's SMS, sent once, by whichever daemon took the event.
    await eventually(lambda: _funded_sms(api, who), what="the wallet_funded SMS", timeout=30)


async def _funded_sms(api: Api, who: Customer) -> bool:
    page = await api.expect(200, "GET", "/api/notifications", customer=who)
    return [n["eventType"] for n in page["items"]].count("wallet_funded") == 1


async def test_a_daemon_killed_between_the_webhook_and_the_credit_loses_nothing(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    paystack: FakePaystackServer,
    database_url: str,
    separate_aws_url: str,
) -> None:
    env = gateway_env(paystack, database_url, separate_aws_url, "1")
    doomed, survivor = await two_daemons(daemons, http, env)
    api = Api(http, survivor.base_url)
    who = await api.customer()
    funding = expected(await api.fund(who, "450.00"), 201, "start a funding")
    paystack.pay(funding["reference"])
    body, signature = paystack.charge_success(funding["reference"])

    # The webhook reaches the doomed daemon, which asks the gateway to verify
    # it; while that call is held, the daemon is killed.
    paystack.hold_verify()
    paystack.verify_seen.clear()
    arriving = asyncio.create_task(post_webhook(http, doomed.base_url, body, signature))
    await asyncio.wait_for(paystack.verify_seen.wait(), 30)
    await doomed.kill()
    with contextlib.suppress(aiohttp.ClientError):
        await arriving  # the gateway saw no answer: it will send the webhook again
    assert await api.balance(who) == "0.00"
    paystack.release_verify()

    # Whichever comes first credits it, once: the survivor's reconciler, or
    # the gateway's retry of the webhook, which arrives at the survivor.
    assert await post_webhook(http, survivor.base_url, body, signature) == 200
    items = await eventually(lambda: credited(api, who, "450.00"), what="the credit")
    assert [(i["kind"], i["source"]) for i in items] == [("credit", "gateway")]
    # The reconciler passes again and again meanwhile: still one credit.
    await eventually(lambda: _settled(api, who, funding["fundingId"]), what="the settled intent")
    again = await credited(api, who, "450.00")
    assert again is not None and len(again) == 1


async def _settled(api: Api, who: Customer, funding_id: str) -> bool:
    shown = await api.expect(200, "GET", f"/api/fundings/{funding_id}", customer=who)
    return bool(shown["status"] == "succeeded")
