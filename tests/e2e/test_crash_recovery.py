"""A daemon killed mid-payment recovers at restart with nothing half-applied;
the exit codes a service manager sees."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.client import Api, eventually
from tests.e2e.conftest import TOKEN_PATTERN, Daemons, ledger_sum, run_cli
from voltpay import __version__

FUNDS = Decimal("300.00")
AMOUNT = Decimal("120.00")


async def test_sigkill_between_debit_and_vend_recovers_at_restart(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    database_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # A slow provider holds the vend open long after the debit committed.
    first = daemons.start(
        {
            **database_env,
            "VOLTPAY_PROVIDER__LATENCY_SECONDS": "5",
            "VOLTPAY_PROVIDER__VEND_TIMEOUT_SECONDS": "30",
        }
    )
    await first.wait_ready(http)
    api = Api(http, first.base_url)
    await api.register_and_login()
    await api.add_funds(f"{FUNDS}")
    bill_id = (await api.verify(f"{AMOUNT}"))["billId"]

    pay = asyncio.create_task(api.call("POST", f"/api/vend/{bill_id}/pay"))
    try:

        async def processing() -> bool:
            if pay.done():
                pytest.fail(f"the pay call answered before the crash: {pay.result()}")
            return (await api.get_bill(bill_id))["status"] == "processing"

        await eventually(processing, timeout=4, interval=0.05, what="the bill to be processing")
        # Debited, vend not answered: the worst moment to die.
        assert Decimal(await api.balance()) == FUNDS - AMOUNT
        await first.kill()
        with pytest.raises(aiohttp.ClientError):
            await pay
    finally:
        if not pay.done():
            pay.cancel()
        with contextlib.suppress(BaseException):
            await pay

    second = daemons.start(
        {
            **database_env,
            "VOLTPAY_PROVIDER__LATENCY_SECONDS": "0",
            "VOLTPAY_PROVIDER__VEND_TIMEOUT_SECONDS": "1",
            "VOLTPAY_BILLING__RECONCILE_INTERVAL_SECONDS": "0.5",
        }
    )
    await second.wait_ready(http)
    api.base_url = second.base_url  # the session survived the crash

    async def settled() -> dict[str, str] | None:
        bill = await api.get_bill(bill_id)
        return bill if bill["status"] in ("paid", "failed") else None

    bill = await eventually(settled, timeout=20, what="the interrupted bill to settle")

    balance = Decimal(await api.balance())
    transactions = await api.transactions()
    kinds = sorted(t["kind"] for t in transactions)
    if bill["status"] == "paid":
        assert re.fullmatch(TOKEN_PATTERN, bill["token"]), bill
        assert balance == FUNDS - AMOUNT
        assert kinds == ["credit", "debit"]
    else:
        assert bill["token"] is None
        assert balance == FUNDS
        assert kinds == ["credit", "debit", "refund"]
    for entry in transactions:
        if entry["kind"] != "credit":
            assert entry["billId"] == bill_id
            assert Decimal(entry["amount"]) == AMOUNT
    assert balance == ledger_sum(transactions)
    assert Decimal(transactions[0]["balanceAfter"]) == balance

    # Stable: a second look, after more reconciler passes, changes nothing.
    await asyncio.sleep(1.2)
    assert (await api.get_bill(bill_id))["status"] == bill["status"]
    assert Decimal(await api.balance()) == balance
    assert len(await api.transactions()) == len(transactions)

    if bill["status"] == "paid":

        async def token_sms() -> bool:
            return any(
                n["eventType"] == "payment_completed" and bill["token"] in n["body"]
                for n in await api.notifications()
            )

        await eventually(token_sms, timeout=10, what="the token SMS after recovery")

    second.send(signal.SIGTERM)
    assert await second.wait_exit(30) == 0


async def test_sigterm_exits_zero_within_the_grace(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    grace = 10.0
    daemon = daemons.start({"VOLTPAY_HTTP__SHUTDOWN_GRACE_SECONDS": str(grace)})
    await daemon.wait_ready(http)
    await Api(http, daemon.base_url).register_and_login()
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(grace) == 0
    assert time.monotonic() - started < grace
    assert "Traceback" not in daemon.stderr() + daemon.stdout()


async def test_sigint_exits_zero(daemons: Daemons, http: aiohttp.ClientSession) -> None:
    daemon = daemons.start()
    await daemon.wait_ready(http)
    daemon.send(signal.SIGINT)
    assert await daemon.wait_exit(15) == 0


def test_bad_configuration_exits_78_naming_the_setting(tmp_path: Path) -> None:
    result = run_cli(["run"], {"VOLTPAY_HTTP__PORT": "abc"}, cwd=tmp_path)
    assert result.returncode == 78, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "VOLTPAY_HTTP__PORT" in lines[0]
    # Nothing was started, so nothing was created.
    assert not (tmp_path / "var").exists()


def test_version(tmp_path: Path) -> None:
    result = run_cli(["--version"], cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"voltpay {__version__}"


async def test_a_second_signal_exits_at_once(daemons: Daemons, http: aiohttp.ClientSession) -> None:
    daemon = daemons.start(
        {
            "VOLTPAY_PROVIDER__LATENCY_SECONDS": "20",
            "VOLTPAY_PROVIDER__VEND_TIMEOUT_SECONDS": "30",
            "VOLTPAY_HTTP__SHUTDOWN_GRACE_SECONDS": "25",
        }
    )
    await daemon.wait_ready(http)
    api = await Api(http, daemon.base_url).register_and_login()
    await api.add_funds("100.00")
    bill = await api.verify("100.00")

    async def pay() -> None:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.post(
                f"{daemon.base_url}/api/Vend/{bill['billId']}/pay",
                headers=api.me.auth,
            ) as response:
                await response.read()

    paying = asyncio.create_task(pay())

    async def processing() -> bool:
        return bool((await api.get_bill(bill["billId"]))["status"] == "processing")

    await eventually(processing, timeout=10)
    daemon.send(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert daemon.running, "the first signal drains, waiting for the slow vend"
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(5) != 0
    assert time.monotonic() - started < 5
    await paying
