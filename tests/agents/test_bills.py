"""The bills agent: a verified meter makes a bill; paying it debits the wallet
and vends a token, refunds a vend that failed, and leaves a vend whose outcome
is unknown to the reconciler. Each refusal writes nothing."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.agents.conftest import Agents, balance, events
from voltpay.bridges.electricity import SimulatedProvider, VendOutcomeUnknown, VendResult
from voltpay.domain.errors import (
    AmountAboveMaximum,
    AmountBelowMinimum,
    BillAlreadyPaid,
    BillExpired,
    BillFailed,
    DomainError,
    InsufficientFunds,
    NotFound,
    VendRefunded,
)
from voltpay.domain.vending import InvalidMeterNumber, MeterNotFound
from voltpay.models.tables import Bill

FUNDED = ["user_registered", "wallet_funded"]


async def test_a_verified_meter_makes_a_pending_bill(agents: Agents) -> None:
    payer = await agents.payer()

    bill = await agents.verify(payer, 100_00, meter="a123456")
    again = await agents.verify(payer, 20_00, meter="A123456")

    assert (bill.status, bill.meter_number, bill.amount_minor) == ("pending", "A123456", 100_00)
    assert bill.expires_at - bill.created_at == timedelta(seconds=600)
    assert bill.customer_name and bill.address
    assert (again.customer_name, again.address) == (bill.customer_name, bill.address)
    assert await events() == ["user_registered", "bill_created", "bill_created"]


@pytest.mark.parametrize(
    ("meter", "amount_minor", "refusal"),
    [
        ("Z999999", 100_00, MeterNotFound),
        ("00012345678", 100_00, MeterNotFound),
        ("A12-3456", 100_00, InvalidMeterNumber),
        ("A123456", 9_99, AmountBelowMinimum),
        ("A123456", 500_000_01, AmountAboveMaximum),
    ],
)
async def test_a_meter_or_amount_the_provider_refuses_makes_no_bill(
    agents: Agents, meter: str, amount_minor: int, refusal: type[DomainError]
) -> None:
    payer = await agents.payer()

    with pytest.raises(refusal):
        await agents.verify(payer, amount_minor, meter)

    assert await Bill.all().count() == 0
    assert await events() == ["user_registered"]


async def test_paying_a_bill_debits_the_wallet_and_vends_its_token(agents: Agents) -> None:
    payer = await agents.payer(500_00)
    bill = await agents.verify(payer, 100_00)

    answer = await agents.pay(payer, bill.id)

    assert answer.settled
    assert answer.bill.status == "paid"
    assert re.fullmatch(r"\d{20}", answer.bill.token or "")
    assert Decimal(answer.bill.units) == Decimal("1.47")  # 100.00 at 68.00 a kWh, rounded down
    assert answer.wallet_balance_minor == 400_00
    assert await balance(payer) == 400_00
    assert await events() == [*FUNDED, "bill_created", "payment_completed"]


async def test_a_bill_the_wallet_does_not_cover_is_refused(agents: Agents) -> None:
    payer = await agents.payer(99_99)
    bill = await agents.verify(payer, 100_00)

    with pytest.raises(InsufficientFunds):
        await agents.pay(payer, bill.id)

    assert (await Bill.get(id=bill.id)).status == "pending"
    assert await balance(payer) == 99_99
    await agents.add_funds(payer, 1)
    assert (await agents.pay(payer, bill.id)).bill.status == "paid"


async def test_a_bill_is_paid_once(agents: Agents) -> None:
    payer = await agents.payer(500_00)
    bill = await agents.verify(payer, 100_00)
    await agents.pay(payer, bill.id)

    with pytest.raises(BillAlreadyPaid):
        await agents.pay(payer, bill.id)

    assert await balance(payer) == 400_00
    assert (await events()).count("payment_completed") == 1


async def test_no_such_bill_and_someone_elses_bill_are_not_found(agents: Agents) -> None:
    owner = await agents.payer(500_00)
    stranger = await agents.payer(500_00)
    bill = await agents.verify(owner, 100_00)

    with pytest.raises(NotFound):
        await agents.pay(owner, uuid.uuid4())
    with pytest.raises(NotFound):
        await agents.pay(stranger, bill.id)

    assert (await Bill.get(id=bill.id)).status == "pending"
    assert (await balance(owner), await balance(stranger)) == (500_00, 500_00)


@pytest.mark.parametrize("bill_ttl_seconds", [0])
async def test_an_expired_bill_is_refused_before_and_after_the_sweep(agents: Agents) -> None:
    payer = await agents.payer(500_00)
    bill = await agents.verify(payer, 100_00)

    with pytest.raises(BillExpired):
        await agents.pay(payer, bill.id)
    await agents.reconcile()  # whose pass records the expiry
    assert (await Bill.get(id=bill.id)).status == "expired"
    with pytest.raises(BillExpired):
        await agents.pay(payer, bill.id)

    assert await balance(payer) == 500_00


async def test_a_failed_vend_is_refunded_and_its_bill_is_done(
    agents: Agents, provider: SimulatedProvider
) -> None:
    payer = await agents.payer(500_00)
    bill = await agents.verify(payer, 100_00)
    provider.failure_rate = 1.0

    with pytest.raises(VendRefunded, match=r"refunded \(balance 500\.00\)"):
        await agents.pay(payer, bill.id)

    assert (await Bill.get(id=bill.id)).status == "failed"
    assert await balance(payer) == 500_00
    assert await events() == [*FUNDED, "bill_created", "payment_failed"]
    provider.failure_rate = 0.0
    with pytest.raises(BillFailed):
        await agents.pay(payer, bill.id)


async def test_a_vend_whose_answer_was_lost_is_settled_by_the_reconciler(
    agents: Agents, provider: SimulatedProvider
) -> None:
    payer = await agents.payer(500_00)
    bill = await agents.verify(payer, 100_00)
    provider.timeout_rate = 1.0  # the vend happens; its answer never comes back

    answer = await agents.pay(payer, bill.id)

    # Accepted, not settled (the API's 202): the debit stands, no refund, no token yet.
    assert not answer.settled
    assert (answer.bill.status, answer.wallet_balance_minor) == ("processing", 400_00)
    with pytest.raises(BillAlreadyPaid):
        await agents.pay(payer, bill.id)
    assert "payment_completed" not in await events()

    assert await agents.reconcile() == 1
    paid = await Bill.get(id=bill.id)
    vended = (await provider.requery(paid.vend_request_id or "")).result
    assert vended is not None
    assert (paid.status, paid.token) == ("paid", vended.token)
    assert await balance(payer) == 400_00
    assert await agents.reconcile() == 0
    assert await events() == [*FUNDED, "bill_created", "payment_completed"]


async def test_a_vend_that_never_reached_the_provider_is_vended_by_the_reconciler(
    agents: Agents, provider: SimulatedProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = await agents.payer(500_00)
    bill = await agents.verify(payer, 100_00)

    async def lost_on_the_way(request_id: str, meter: str, amount_minor: int) -> VendResult:
        raise VendOutcomeUnknown(request_id)

    monkeypatch.setattr(provider, "vend", lost_on_the_way)
    assert not (await agents.pay(payer, bill.id)).settled
    monkeypatch.undo()

    assert await agents.reconcile() == 1
    paid = await Bill.get(id=bill.id)
    assert paid.status == "paid" and paid.token
    assert await balance(payer) == 400_00
