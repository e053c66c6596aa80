"""The database's conditional updates make exactly the moves the domain's rules
allow: for every bill status on either side of its expiry, and for balances
around each wallet limit, the statement moves money or a bill if and only if
the rule in ``voltpay.domain`` says it may. On both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from tortoise.transactions import in_transaction

from tests.conftest import new_user
from voltpay.domain.bills import (
    COMPLETE_PAYMENT,
    EXPIRE,
    FAIL_PAYMENT,
    START_PAYMENT,
    BillStatus,
    check_payable,
)
from voltpay.domain.errors import BalanceLimitReached, BillNotPayable, InsufficientFunds
from voltpay.domain.wallets import MAX_BALANCE_MINOR, may_credit, may_debit
from voltpay.models import bills as bill_store
from voltpay.models import money
from voltpay.models.tables import Bill, LedgerEntry, Wallet

NOW = datetime.now(UTC)
AMOUNT = 100_00
EXPIRIES = {"expired": NOW - timedelta(minutes=1), "unexpired": NOW + timedelta(minutes=1)}


async def _wallet(balance_minor: int) -> tuple[uuid.UUID, uuid.UUID]:
    owner, wallet_id = await new_user()
    await Wallet.filter(id=wallet_id).update(balance_minor=balance_minor)
    return owner, wallet_id


async def _bill(
    owner: uuid.UUID, wallet_id: uuid.UUID, status: BillStatus, expires_at: datetime
) -> Bill:
    return await Bill.create(
        id=uuid.uuid4(),
        user_id=owner,
        wallet_id=wallet_id,
        meter_number="A123456",
        meter_type="prepaid",
        customer_name="Ada",
        address="1 Broad Street",
        amount_minor=AMOUNT,
        status=status.value,
        tariff_minor_per_kwh=6800,
        vend_request_id=uuid.uuid4().hex if status is not BillStatus.PENDING else None,
        created_at=NOW - timedelta(hours=1),
        expires_at=expires_at,
        processing_since=NOW if status is BillStatus.PROCESSING else None,
        updated_at=NOW,
    )


CASES = [(status, expiry) for status in BillStatus for expiry in EXPIRIES]
IDS = [f"{status.value}-{expiry}" for status, expiry in CASES]


@pytest.mark.parametrize(("status", "expiry"), CASES, ids=IDS)
async def test_a_payment_starts_exactly_when_the_rule_allows(
    database: str, status: BillStatus, expiry: str
) -> None:
    owner, wallet_id = await _wallet(10 * AMOUNT)
    bill = await _bill(owner, wallet_id, status, EXPIRIES[expiry])
    if START_PAYMENT.allows(status, bill.expires_at, NOW):
        started = await bill_store.start_payment(bill.id, owner, wallet_id, NOW)
        assert started.bill.status == START_PAYMENT.target.value
        assert started.balance_after_minor == 9 * AMOUNT
        return
    with pytest.raises(BillNotPayable) as refused:
        check_payable(status, bill.expires_at, NOW)
    with pytest.raises(type(refused.value)):
        await bill_store.start_payment(bill.id, owner, wallet_id, NOW)
    assert (await Bill.get(id=bill.id)).status == status.value
    assert await LedgerEntry.filter(wallet_id=wallet_id).count() == 0


@pytest.mark.parametrize(("status", "expiry"), CASES, ids=IDS)
async def test_completing_failing_and_expiring_move_exactly_when_the_rules_allow(
    database: str, status: BillStatus, expiry: str
) -> None:
    owner, wallet_id = await _wallet(0)
    expires_at = EXPIRIES[expiry]
    for move in (COMPLETE_PAYMENT, FAIL_PAYMENT, EXPIRE):
        bill = await _bill(owner, wallet_id, status, expires_at)
        if move is COMPLETE_PAYMENT:
            settled = await bill_store.complete_payment(
                bill,
                token="1" * 20,
                units=Decimal("1.47"),
                receipt_number="R-1",
                tariff_minor_per_kwh=6800,
                now=NOW,
            )
            moved = settled.event is not None
        elif move is FAIL_PAYMENT:
            moved = (await bill_store.fail_payment(bill.id, "declined", NOW)).event is not None
        else:
            await Bill.exclude(id=bill.id).update(status=BillStatus.PAID.value)  # only this one
            moved = await bill_store.expire_overdue(NOW) == 1
        expected = move.allows(status, expires_at, NOW)
        assert moved is expected, move
        now_status = (await Bill.get(id=bill.id)).status
        assert now_status == (move.target if expected else status).value


BALANCES = [0, 1, AMOUNT - 1, AMOUNT, AMOUNT + 1]


@pytest.mark.parametrize("balance", BALANCES)
async def test_a_debit_happens_exactly_when_the_balance_covers_it(
    database: str, balance: int
) -> None:
    owner, wallet_id = await _wallet(balance)
    bill = await _bill(owner, wallet_id, BillStatus.PENDING, EXPIRIES["unexpired"])
    if may_debit(balance, AMOUNT):
        started = await bill_store.start_payment(bill.id, owner, wallet_id, NOW)
        assert started.balance_after_minor == balance - AMOUNT
    else:
        with pytest.raises(InsufficientFunds):
            await bill_store.start_payment(bill.id, owner, wallet_id, NOW)
        assert (await Wallet.get(id=wallet_id)).balance_minor == balance


@pytest.mark.parametrize(
    "balance",
    [0, MAX_BALANCE_MINOR - AMOUNT - 1, MAX_BALANCE_MINOR - AMOUNT, MAX_BALANCE_MINOR - 1],
)
async def test_a_credit_happens_exactly_when_the_wallet_can_hold_it(
    database: str, balance: int
) -> None:
    owner, wallet_id = await _wallet(balance)
    if may_credit(balance, AMOUNT):
        async with in_transaction() as conn:
            moved = await money.path(conn).credit(conn, wallet_id, AMOUNT, NOW, owner_id=owner)
        assert moved.balance_after_minor == balance + AMOUNT
    else:
        with pytest.raises(BalanceLimitReached):
            async with in_transaction() as conn:
                await money.path(conn).credit(conn, wallet_id, AMOUNT, NOW, owner_id=owner)
        assert (await Wallet.get(id=wallet_id)).balance_minor == balance
