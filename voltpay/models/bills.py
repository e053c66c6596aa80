"""The bill saga's database steps. Each step is one transaction; a step that
finds the bill already moved on does nothing, so every step is safe to retry.

The steps that move money (start, complete, fail) run on the database's
``voltpay.models.money.MoneyPath``; expiry, which moves none, is one statement
built from the domain's EXPIRE move here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tortoise import connections
from tortoise.transactions import in_transaction

from voltpay.domain.bills import EXPIRE, BillStatus
from voltpay.domain.errors import BillNotFound
from voltpay.domain.events import BillCreated, Event, PaymentCompleted, new_event
from voltpay.models import money, sql, wallets
from voltpay.models.money import PaymentStarted, Settled, guard, guard_values
from voltpay.models.outbox import record_event
from voltpay.models.tables import Bill


@dataclass(frozen=True)
class NewBill:
    user_id: uuid.UUID
    meter_number: str
    meter_type: str
    customer_name: str
    address: str
    amount_minor: int
    tariff_minor_per_kwh: int
    ttl_seconds: int


async def create_bill(new: NewBill, now: datetime | None = None) -> tuple[Bill, Event]:
    moment = now or datetime.now(UTC)
    async with in_transaction() as conn:
        bill = await Bill.create(
            id=uuid.uuid4(),
            user_id=new.user_id,
            meter_number=new.meter_number,
            meter_type=new.meter_type,
            customer_name=new.customer_name,
            address=new.address,
            amount_minor=new.amount_minor,
            status=BillStatus.PENDING.value,
            tariff_minor_per_kwh=new.tariff_minor_per_kwh,
            created_at=moment,
            expires_at=moment + timedelta(seconds=new.ttl_seconds),
            updated_at=moment,
            using_db=conn,
        )
        created = BillCreated(
            user_id=new.user_id, bill=money.summary(bill), expires_at=bill.expires_at
        )
        event = await record_event(conn, created, moment)
    return bill, event


async def owned_bill(bill_id: uuid.UUID, owner_id: uuid.UUID) -> Bill:
    bill = await Bill.get_or_none(id=bill_id, user_id=owner_id)
    if bill is None:
        raise BillNotFound(str(bill_id))
    return bill


_EXPIRE = "UPDATE bills SET status = $1, updated_at = $2 WHERE " + guard(EXPIRE, 3)


async def expire_overdue(now: datetime | None = None) -> int:
    moment = now or datetime.now(UTC)
    return await sql.execute(
        connections.get("default"),
        _EXPIRE,
        EXPIRE.target.value,
        moment,
        *guard_values(EXPIRE, moment),
    )


async def start_payment(
    bill_id: uuid.UUID, owner_id: uuid.UUID, wallet_id: uuid.UUID, now: datetime | None = None
) -> PaymentStarted:
    """pending → processing and the debit, in one transaction: one winner only.

    Raises BillNotFound, BillNotPayable (from the domain rules),
    InsufficientFunds or WalletNotFound; in every failing case nothing is
    written.
    """
    start = money.Start(bill_id, owner_id, wallet_id, uuid.uuid4().hex, now or datetime.now(UTC))
    return await money.path().start(start)


async def complete_payment(
    bill: Bill,
    *,
    token: str,
    units: Decimal,
    receipt_number: str,
    tariff_minor_per_kwh: int,
    wallet_balance_minor: int | None = None,
    now: datetime | None = None,
) -> Settled:
    """processing → paid with the token, and its payment_completed event; a
    second call changes nothing.

    ``bill`` is the bill as its payment started (its owner, meter, amount and
    wallet do not change after); ``wallet_balance_minor`` is the balance the
    debit left, told to the user, or None to tell the balance as it is now
    (a payment settled later by the reconciler).
    """
    moment = now or datetime.now(UTC)
    if wallet_balance_minor is None:
        wallet_balance_minor = await wallets.balance_of(money.debited_wallet(bill))
    paid = PaymentCompleted(
        user_id=money.owner(bill),
        bill=money.summary(bill),
        wallet_id=money.debited_wallet(bill),
        units=units,
        receipt_number=receipt_number,
        wallet_balance_minor=wallet_balance_minor,
    )
    event = new_event(paid, moment)
    completion = money.Completion(
        bill.id, token, str(units), receipt_number, tariff_minor_per_kwh, moment, event
    )
    moved = await money.path().complete(completion)
    if moved is None:
        return Settled(await Bill.get(id=bill.id), None, None)
    return Settled(moved, wallet_balance_minor, event)


async def fail_payment(bill_id: uuid.UUID, reason: str, now: datetime | None = None) -> Settled:
    """processing → failed with the debit refunded, and its payment_failed
    event; a second call changes nothing."""
    return await money.path().fail(bill_id, reason, now or datetime.now(UTC))


async def stuck_in_processing(older_than: datetime) -> list[Bill]:
    return await Bill.filter(
        status=BillStatus.PROCESSING.value, processing_since__lte=older_than
    ).order_by("processing_since")
