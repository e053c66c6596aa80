"""/openapi.json is exact: schemathesis, every check in every phase, over the
document the daemon serves, as one registered and funded user (made an
operator, so that the operators' routes are reached too), in each funding
mode, whose documents differ.

The suite runs a short budget per mode with a fixed seed; ``make fuzz`` runs a
long one (``SEED=`` and ``FUZZ_SECONDS=``). A failure prints each disagreement
with the request that shows it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.client import Api, expected
from tests.conftest import sqlite_copy
from tests.fakes.paystack_server import FakePaystackServer
from tests.fuzzing import fuzz
from voltpay.http.openapi import openapi_document
from voltpay.models.users import OPERATOR, grant_role

SECRET = "sk_test_" + "0" * 40
# What the run cannot reach but refused: in sandbox mode no funding intent
# exists to read; only the gateway can sign a webhook.
UNREACHABLE = {
    "sandbox": {"GET /api/fundings/{fundingId}"},
    "gateway": {"POST /api/gateway/paystack/webhook"},
}


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite alone: the document and the routes are the same on PostgreSQL,
    and the budget is better spent on requests."""
    return sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture(params=["sandbox", "gateway"])
def funding_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
async def paystack() -> AsyncIterator[FakePaystackServer]:
    async with FakePaystackServer(secret_key=SECRET) as fake:
        yield fake


@pytest.fixture
def settings_overrides(
    funding_mode: str, paystack: FakePaystackServer
) -> dict[str, dict[str, Any]]:
    """Limits a fuzzer's thousands of requests from one address would reach
    at once, which would leave the rest of the run answering 429 (each 429
    stays documented, and is accepted where it still comes)."""
    overrides: dict[str, dict[str, Any]] = {
        "auth": {
            "max_failed_logins": 1000,
            "max_failed_logins_per_client": 100_000,
            "max_failed_logins_per_account": 100_000,
        },
        "signup": {"per_client_per_hour": 1_000_000},
    }
    if funding_mode == "gateway":
        overrides["funding"] = {
            "mode": "gateway",
            "gateway_url": paystack.base_url,
            "secret_key": SECRET,
            "callback_url": "https://shop.example.com/funded",
        }
    return overrides


async def test_the_server_does_what_its_openapi_document_says(
    api: Api, funding_mode: Any, pytestconfig: pytest.Config
) -> None:
    who = await api.customer()
    assert await grant_role(who.username, OPERATOR)
    # Funded as an operator funds a wallet, which works in either mode.
    credit = expected(
        await api.call(
            "POST",
            f"/api/admin/wallets/{who.wallet_id}/credits",
            json={"amount": "500000.00", "reason": "the fuzzer's float"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
            customer=who,
        ),
        201,
        "fund the fuzzer",
    )
    # The user's own ids, for the operations the fuzzer reaches only by a
    # link to one (the second pass, for those the first left unreached).
    bill = expected(await api.bill(who), 201, "a bill for the fuzzer")
    own_ids = {"walletId": who.wallet_id, "creditId": credit["creditId"], "billId": bill["billId"]}
    if funding_mode == "gateway":
        funding = expected(await api.fund(who, "100.00"), 201, "a funding for the fuzzer")
        own_ids["fundingId"] = funding["fundingId"]
    report = await asyncio.to_thread(
        fuzz,
        api.base_url,
        username=who.username,
        password=who.password,
        seed=pytestconfig.getoption("fuzz_seed"),
        seconds=pytestconfig.getoption("fuzz_seconds"),
        own_ids=own_ids,
        unreachable=UNREACHABLE[funding_mode],
    )
    print(f"{funding_mode} mode, {report.summary()}")
    assert not report.errors, "\n".join(report.errors)
    assert not report.failures, "\n\n".join(map(str, report.failures))
    operations = {
        f"{method.upper()} {path}"
        for path, methods in openapi_document(funding_mode)["paths"].items()
        for method in methods
    }
    assert report.untested(operations) <= UNREACHABLE[funding_mode], report.statuses
