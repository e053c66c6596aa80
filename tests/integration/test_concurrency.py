"""Money under concurrency: the balance equals the ledger and never goes
below zero, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest

from tests.client import Api
from voltpay.daemon.runtime import Daemon
from voltpay.models import wallets
from voltpay.models.tables import LedgerEntry, Wallet

pytestmark = pytest.mark.timeout(240)
# One user's requests all at once: what is tested is the ledger under
# concurrency, not the front door's share per user, which is lifted here.
ALL_AT_ONCE = {"http": {"max_in_flight_per_user": 10_000, "max_connections_per_client": 10_000}}


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return ALL_AT_ONCE


async def _ledger_matches(wallet_id: str) -> int:
    wallet = await Wallet.get(id=wallet_id)
    assert wallet.balance_minor >= 0
    assert await wallets.ledger_sum(uuid.UUID(wallet_id)) == wallet.balance_minor
    return int(wallet.balance_minor)


@pytest.mark.parametrize(
    "settings_overrides",
    [{"agents": {"bills_concurrency": 32, "mailbox_size": 1000}, **ALL_AT_ONCE}],
)
async def test_200_pays_against_a_wallet_that_affords_100(api: Api, daemon: Daemon) -> None:
    who = await api.customer(funds="1000.00")
    bills = [(await api.bill(who, "10.00")).body["billId"] for _ in range(200)]
    replies = await asyncio.gather(*(api.pay(who, bill_id) for bill_id in bills))
    statuses = Counter(reply.status for reply in replies)
    assert statuses == {200: 100, 402: 100}, statuses
    assert await api.balance(who) == "0.00"
    assert await _ledger_matches(who.wallet_id) == 0
    debits = await LedgerEntry.filter(wallet_id=who.wallet_id, kind="debit").count()
    assert debits == 100
    paid = {r.body["billId"] for r in replies if r.status == 200}
    listed = await api.call("GET", "/api/bills?status=paid&limit=200", customer=who)
    assert {b["billId"] for b in listed.body["items"]} == paid
    pending = await api.call("GET", "/api/bills?status=pending&limit=200", customer=who)
    assert len(pending.body["items"]) == 100


async def test_50_pays_of_one_bill_debit_once(api: Api) -> None:
    who = await api.customer(funds="1000.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    replies = await asyncio.gather(*(api.pay(who, bill_id) for _ in range(50)))
    statuses = Counter(reply.status for reply in replies)
    assert statuses[200] == 1, statuses
    assert set(statuses) <= {200, 409}
    assert all(r.body["code"] == "bill_already_paid" for r in replies if r.status == 409)
    assert await api.balance(who) == "900.00"
    assert await LedgerEntry.filter(wallet_id=who.wallet_id, kind="debit").count() == 1
    assert await _ledger_matches(who.wallet_id) == 90000


async def test_20_identical_idempotent_requests_have_one_effect(api: Api) -> None:
    who = await api.customer()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    path = f"/api/wallets/{who.wallet_id}/add-funds"
    replies = await asyncio.gather(
        *(
            api.call("POST", path, json={"amount": "25.00"}, headers=key, customer=who)
            for _ in range(20)
        )
    )
    ok = [r for r in replies if r.status == 200]
    assert ok, [r.status for r in replies]
    assert {r.status for r in replies} <= {200, 409}
    assert all(r.body["code"] == "idempotency_in_progress" for r in replies if r.status == 409)
    assert len({r.raw for r in ok}) == 1, "every 200 is the same stored answer"
    assert await api.balance(who) == "25.00"
    again = await api.call("POST", path, json={"amount": "25.00"}, headers=key, customer=who)
    assert (again.status, again.raw) == (200, ok[0].raw)
    assert await _ledger_matches(who.wallet_id) == 2500


async def test_concurrent_credits_and_debits_keep_the_ledger(api: Api) -> None:
    who = await api.customer(funds="300.00")
    bills = [(await api.bill(who, "20.00")).body["billId"] for _ in range(30)]
    work: list[Any] = [api.pay(who, bill_id) for bill_id in bills]
    work += [api.fund(who, "5.00") for _ in range(30)]
    replies = await asyncio.gather(*work)
    assert {r.status for r in replies} <= {200, 402}
    paid = sum(1 for r in replies[:30] if r.status == 200)
    balance_minor = await _ledger_matches(who.wallet_id)
    assert balance_minor == 30000 + 30 * 500 - paid * 2000


async def test_a_pay_that_lost_a_race_it_can_now_win_is_tried_again(
    api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-statement start (PostgreSQL) writes nothing when the balance
    did not cover the bill at that instant; if funds arrived meanwhile, the
    payment is tried again rather than refused."""
    from voltpay.models import money, sql

    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "40.00")).body["billId"]
    real_rows = sql.rows
    lost: list[str] = []

    async def lose_the_first_start(conn: Any, statement: str, *values: Any) -> Any:
        if statement == money._START_IN_ONE and not lost:
            lost.append(statement)
            return []
        return await real_rows(conn, statement, *values)

    monkeypatch.setattr(sql, "rows", lose_the_first_start)
    paid = await api.pay(who, bill_id)
    assert paid.status == 200, paid.body
    if not database_url.startswith("sqlite"):
        assert lost, "PostgreSQL starts a payment in one statement"
    assert await api.balance(who) == "60.00"
    assert await _ledger_matches(who.wallet_id) == 6000
