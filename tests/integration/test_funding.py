"""Money in from a payment the gateway confirms, on SQLite and PostgreSQL,
against a fake Paystack server: the intent, the signed webhook, our own
verify call, exactly one credit per reference whatever arrives, the
reconciler for lost webhooks; and the sandbox's credits, marked as such."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.client import Api, Customer, Reply, eventually, expected
from tests.fakes.paystack_server import FakePaystackServer
from tests.integration.test_api_contract import assert_problem
from voltpay.daemon.runtime import Daemon
from voltpay.http.fundings import WEBHOOK_PATH
from voltpay.models import wallets
from voltpay.models.tables import Funding, LedgerEntry, OutboxEvent

SECRET = "sk_test_" + "0" * 40


@pytest.fixture
async def paystack() -> AsyncIterator[FakePaystackServer]:
    async with FakePaystackServer(secret_key=SECRET) as fake:
        yield fake


@pytest.fixture
def settings_overrides(paystack: FakePaystackServer) -> dict[str, dict[str, Any]]:
    return {
        "funding": {
            "mode": "gateway",
            "gateway_url": paystack.base_url,
            "secret_key": SECRET,
            "callback_url": "https://shop.example.com/funded",
            # Checks are made due by the tests themselves (``due_now``).
            "reconcile_after_seconds": 3600,
            "reconcile_interval_seconds": 0.2,
        }
    }


async def intent(api: Api, who: Customer, amount: Any = "250.00") -> dict[str, Any]:
    return expected(await api.fund(who, amount), 201, "start a funding")


async def webhook(api: Api, body: bytes, signature: str | None) -> Reply:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["x-paystack-signature"] = signature
    return await api.call("POST", WEBHOOK_PATH, data=body, headers=headers)


async def deliver(api: Api, paystack: FakePaystackServer, reference: str) -> Reply:
    body, signature = paystack.charge_success(reference)
    return await webhook(api, body, signature)


async def credits_of(reference: str) -> int:
    funding = await Funding.get(reference=reference)
    return await LedgerEntry.filter(funding_id=funding.id, kind="credit").count()


async def assert_balance_is_the_ledger(wallet_id: str) -> None:
    wallet = uuid.UUID(wallet_id)
    assert await wallets.balance_of(wallet) == await wallets.ledger_sum(wallet)


async def due_now(reference: str, *, expired: bool = False) -> None:
    """Time passes: the intent's check is due (and, if ``expired``, it is past its expiry)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    changes: dict[str, Any] = {"next_check_at": past}
    if expired:
        changes["expires_at"] = past
    await Funding.filter(reference=reference).update(**changes)


async def test_add_funds_opens_an_intent_and_credits_nothing(
    api: Api, paystack: FakePaystackServer
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "250.00")
    assert funding["status"] == "pending"
    assert funding["amount"] == "250.00"
    assert funding["reference"].startswith("vp_")
    assert funding["checkoutUrl"].startswith("https://checkout.paystack.com/")
    assert funding["expiresAt"] > funding["createdAt"]
    txn = paystack.transactions[funding["reference"]]
    assert txn.amount == 25000  # kobo on the wire
    assert txn.callback_url == "https://shop.example.com/funded"
    assert await api.balance(who) == "0.00"
    shown = await api.expect(200, "GET", f"/api/fundings/{funding['fundingId']}", customer=who)
    assert shown == funding
    listed = await api.expect(200, "GET", "/api/fundings?limit=10", customer=who)
    assert [item["fundingId"] for item in listed["items"]] == [funding["fundingId"]]


async def test_an_amount_under_the_gateways_smallest_charge_is_422_and_makes_no_intent(
    api: Api, paystack: FakePaystackServer
) -> None:
    """The gateway would refuse it for good: no 502 that invites a retry."""
    who = await api.customer()
    reply = await api.fund(who, "0.99")
    assert_problem(reply, 422, "amount_below_minimum")
    assert paystack.transactions == {}
    assert await Funding.all().count() == 0
    assert (await api.fund(who, "1.00")).status == 201


async def test_a_paid_and_verified_charge_is_credited_once_and_texted(
    api: Api, paystack: FakePaystackServer
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "250.00")
    paystack.pay(funding["reference"])
    reply = await deliver(api, paystack, funding["reference"])
    assert reply.status == 200, reply.body
    assert funding["reference"] in paystack.verify_calls  # never trusted alone
    assert await api.balance(who) == "250.00"
    shown = await api.expect(200, "GET", f"/api/fundings/{funding['fundingId']}", customer=who)
    assert shown["status"] == "succeeded"
    entries = await api.call("GET", f"/api/wallets/{who.wallet_id}/transactions", customer=who)
    [entry] = entries.body["items"]
    assert (entry["kind"], entry["source"], entry["amount"]) == ("credit", "gateway", "250.00")
    assert entry["transactionId"] == shown["transactionId"]
    event = await OutboxEvent.get(event_type="wallet_funded")
    data = orjson.loads(event.body)["data"]
    assert (data["source"], data["reference"]) == ("gateway", funding["reference"])

    async def texted() -> list[dict[str, Any]]:
        found = await api.expect(200, "GET", "/api/notifications", customer=who)
        return [n for n in found["items"] if n["eventType"] == "wallet_funded"]

    [sms] = await eventually(texted, what="the funding's SMS")
    assert "250.00" in sms["body"]
    await assert_balance_is_the_ledger(who.wallet_id)


async def test_the_same_webhook_three_times_credits_once(
    api: Api, paystack: FakePaystackServer
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "100.00")
    paystack.pay(funding["reference"])
    for _ in range(3):
        assert (await deliver(api, paystack, funding["reference"])).status == 200
    assert await api.balance(who) == "100.00"
    assert await credits_of(funding["reference"]) == 1


async def test_twenty_copies_in_parallel_credit_once(
    api: Api, paystack: FakePaystackServer
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "100.00")
    paystack.pay(funding["reference"])
    replies = await asyncio.gather(
        *(deliver(api, paystack, funding["reference"]) for _ in range(20))
    )
    assert [r.status for r in replies] == [200] * 20
    assert await api.balance(who) == "100.00"
    assert await credits_of(funding["reference"]) == 1
    await assert_balance_is_the_ledger(who.wallet_id)


@pytest.mark.parametrize("signature", [None, "", "00" * 64, "not hex at all"])
async def test_a_forged_or_unsigned_webhook_is_401_and_changes_nothing(
    api: Api, paystack: FakePaystackServer, signature: str | None
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "100.00")
    paystack.pay(funding["reference"])
    body, _ = paystack.charge_success(funding["reference"])
    reply = await webhook(api, body, signature)
    assert reply.status == 401
    assert reply.body["code"] == "invalid_signature"
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert paystack.verify_calls == []
    assert await api.balance(who) == "0.00"


async def test_a_body_signed_with_another_key_is_401(
    api: Api, paystack: FakePaystackServer
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "100.00")
    paystack.pay(funding["reference"])
    body, _ = paystack.charge_success(funding["reference"])
    forger = FakePaystackServer(secret_key="sk_test_someone_else")
    assert (await webhook(api, body, forger.sign(body))).status == 401
    # A signed body changed afterwards (a larger amount) is forged too.
    signed, signature = paystack.charge_success(funding["reference"])
    assert (await webhook(api, signed.replace(b"10000", b"99999"), signature)).status == 401
    assert await api.balance(who) == "0.00"


async def test_a_webhook_for_an_unknown_reference_is_acknowledged_and_credits_nothing(
    api: Api, paystack: FakePaystackServer, daemon: Daemon
) -> None:
    who = await api.customer()
    body, signature = paystack.charge_success("vp_not_ours_123")
    reply = await webhook(api, body, signature)
    assert reply.status == 200
    assert reply.body == {"status": "unknown"}
    assert await LedgerEntry.all().count() == 0
    assert await api.balance(who) == "0.00"
    sample = daemon.metrics.sample(
        "voltpay_gateway_webhooks_total", {"result": "unknown_reference"}
    )
    assert sample == 1


async def test_a_mismatched_amount_is_not_credited_and_goes_to_review(
    api: Api, paystack: FakePaystackServer, daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "500.00")
    paystack.pay(funding["reference"], amount=100)  # 1.00 paid for 500.00 asked
    reply = await deliver(api, paystack, funding["reference"])
    assert reply.status == 200
    assert await api.balance(who) == "0.00"
    shown = await api.expect(200, "GET", f"/api/fundings/{funding['fundingId']}", customer=who)
    assert shown["status"] == "needs_review"
    assert daemon.metrics.sample("voltpay_fundings_total", {"outcome": "needs_review"}) == 1
    assert any(r.levelname == "ERROR" and "needs review" in r.getMessage() for r in caplog.records)
    # Later webhooks change nothing either.
    assert (await deliver(api, paystack, funding["reference"])).status == 200
    assert await api.balance(who) == "0.00"


async def test_a_charge_in_another_currency_goes_to_review(
    api: Api, paystack: FakePaystackServer
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "10.00")
    paystack.pay(funding["reference"], currency="USD")
    await deliver(api, paystack, funding["reference"])
    assert await api.balance(who) == "0.00"
    assert (await Funding.get(reference=funding["reference"])).status == "needs_review"


async def test_a_webhook_the_gateway_does_not_confirm_credits_nothing(
    api: Api, paystack: FakePaystackServer
) -> None:
    """A well-signed charge.success for a transaction the verify call says
    was not paid (a replayed or early webhook) credits nothing."""
    who = await api.customer()
    funding = await intent(api, who, "100.00")
    reply = await deliver(api, paystack, funding["reference"])
    assert reply.status == 200
    assert await api.balance(who) == "0.00"
    assert (await Funding.get(reference=funding["reference"])).status == "pending"


async def test_a_lost_webhook_is_found_by_the_reconciler_and_a_late_one_changes_nothing(
    api: Api, paystack: FakePaystackServer, daemon: Daemon
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "300.00")
    paystack.pay(funding["reference"])  # ...and the webhook never arrives
    await due_now(funding["reference"])
    assert await daemon.fundings.reconcile_once() == {"credited": 1}
    assert await api.balance(who) == "300.00"
    late = await deliver(api, paystack, funding["reference"])
    assert (late.status, late.body) == (200, {"status": "duplicate"})
    assert await api.balance(who) == "300.00"
    assert await credits_of(funding["reference"]) == 1


async def test_the_reconciler_waits_for_a_checkout_under_way_then_expires_it(
    api: Api, paystack: FakePaystackServer, daemon: Daemon
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "50.00")
    await due_now(funding["reference"])
    assert await daemon.fundings.reconcile_once() == {"deferred": 1}
    row = await Funding.get(reference=funding["reference"])
    assert (row.status, row.checks) == ("pending", 1)
    assert row.next_check_at > datetime.now(UTC)
    await due_now(funding["reference"], expired=True)
    assert await daemon.fundings.reconcile_once() == {"expired": 1}
    assert (await Funding.get(reference=funding["reference"])).status == "expired"
    # A payment the gateway reports after that is for a person, not credited blindly.
    assert await api.balance(who) == "0.00"


async def test_a_declined_payment_fails_the_intent(
    api: Api, paystack: FakePaystackServer, daemon: Daemon
) -> None:
    who = await api.customer()
    funding = await intent(api, who, "50.00")
    paystack.decline(funding["reference"])
    await due_now(funding["reference"])
    assert await daemon.fundings.reconcile_once() == {"failed": 1}
    assert await api.balance(who) == "0.00"


async def test_an_unreachable_gateway_is_502_and_the_reconciler_settles_the_intent(
    api: Api, paystack: FakePaystackServer, daemon: Daemon
) -> None:
    who = await api.customer()
    paystack.unavailable = True
    reply = await api.fund(who, "20.00")
    assert reply.status == 502
    assert reply.body["code"] == "gateway_unavailable"
    [row] = await Funding.all()
    paystack.unavailable = False
    await due_now(row.reference, expired=True)
    assert await daemon.fundings.reconcile_once() == {"expired": 1}
    assert await api.balance(who) == "0.00"


async def test_someone_elses_funding_is_not_found(api: Api) -> None:
    owner, other = await api.customer(), await api.customer()
    funding = await intent(api, owner)
    reply = await api.call("GET", f"/api/fundings/{funding['fundingId']}", customer=other)
    assert reply.status == 404
    listed = await api.expect(200, "GET", "/api/fundings", customer=other)
    assert listed["items"] == []
    assert (await api.fund(other, "10.00")).status == 201
    # Nor can an intent be opened for someone else's wallet.
    stranger = await api.call(
        "POST",
        f"/api/wallets/{owner.wallet_id}/add-funds",
        json={"amount": "10.00"},
        customer=other,
    )
    assert stranger.status == 404


@pytest.mark.parametrize(
    "body",
    [
        {"amount": "100.00"},
        {"amount": "100.00", "source": "sandbox"},
        {"amount": "100.00", "status": "succeeded", "mode": "sandbox"},
        {"amount": 100, "paid": True},
    ],
)
async def test_a_customer_cannot_credit_their_own_wallet_in_gateway_mode(
    api: Api, body: dict[str, Any]
) -> None:
    who = await api.customer()
    for path in (
        f"/api/wallets/{who.wallet_id}/add-funds",
        f"/api/admin/wallets/{who.wallet_id}/credits",
    ):
        await api.call("POST", path, json=body | {"reason": "I say so"}, customer=who)
    assert await api.balance(who) == "0.00"
    assert await LedgerEntry.all().count() == 0
