"""The bill saga's database steps. Each step is one transaction; a step that
finds the bill already moved on does nothing, so every step is safe to retry.

Each step's conditional update is built from the move it makes
(``voltpay.domain.bills``: START_PAYMENT, COMPLETE_PAYMENT, FAIL_PAYMENT,
EXPIRE), so a change to when a bill may move is one edit there. The start and
the completion have one path per database (SQLite: one transaction run whole
in the connection's thread; PostgreSQL: one statement); the failure, with its
refund, is one transaction of the same statements on both.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from voltpay.domain.bills import (
    COMPLETE_PAYMENT,
    EXPIRE,
    FAIL_PAYMENT,
    START_PAYMENT,
    BillStatus,
    Expiry,
    Move,
    check_payable,
)
from voltpay.domain.errors import BillNotFound, InsufficientFunds
from voltpay.domain.events import (
    BillCreated,
    BillSummary,
    Event,
    PaymentCompleted,
    PaymentFailed,
    new_event,
)
from voltpay.models import sql, sqlite_engine, wallets
from voltpay.models.outbox import OUTBOX_INSERT, OUTBOX_ROW, outbox_values, record_event
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


@dataclass(frozen=True)
class PaymentStarted:
    bill: Bill
    request_id: str
    balance_after_minor: int


@dataclass(frozen=True)
class Settled:
    bill: Bill
    wallet_balance_minor: int | None
    event: Event | None


def _owner(bill: Bill) -> uuid.UUID:
    owner: uuid.UUID = bill.user_id  # type: ignore[attr-defined]
    return owner


def _summary(bill: Bill) -> BillSummary:
    return BillSummary(
        bill_id=bill.id,
        meter_number=bill.meter_number,
        customer_name=bill.customer_name,
        amount_minor=bill.amount_minor,
    )


def _debited_wallet(bill: Bill) -> uuid.UUID:
    """The wallet a paid bill was debited from. The start of a payment sets it
    in the statement that makes the bill processing, so only a broken
    invariant finds none, and that is an error rather than an event that
    names no wallet."""
    if bill.wallet_id is None:
        raise RuntimeError(f"bill {bill.id} is in payment without a wallet")
    return bill.wallet_id


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
        created = BillCreated(user_id=new.user_id, bill=_summary(bill), expires_at=bill.expires_at)
        event = await record_event(conn, created, moment)
    return bill, event


async def owned_bill(bill_id: uuid.UUID, owner_id: uuid.UUID) -> Bill:
    bill = await Bill.get_or_none(id=bill_id, user_id=owner_id)
    if bill is None:
        raise BillNotFound(str(bill_id))
    return bill


def guard(move: Move, first: int, *, table: str = "") -> str:
    """SQL: the bill may make ``move`` (its WHERE clause, after the row's own
    key). Binds ``guard_values(move, now)`` from placeholder ``$first`` on."""
    column = f"{table}." if table else ""
    clause = f"{column}status = ${first}"
    if move.expiry is Expiry.BEFORE:
        clause += f" AND {column}expires_at > ${first + 1}"
    elif move.expiry is Expiry.AFTER:
        clause += f" AND {column}expires_at <= ${first + 1}"
    return clause


def guard_values(move: Move, now: datetime) -> tuple[Any, ...]:
    if move.expiry is Expiry.ANY:
        return (move.source.value,)
    return move.source.value, now


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
    start = _Start(bill_id, owner_id, wallet_id, uuid.uuid4().hex, now or datetime.now(UTC))
    conn = connections.get("default")
    if sql.is_sqlite(conn):
        return await _start_on_sqlite(sqlite_engine.own_client(conn), start)
    return await _start_in_one_statement(conn, start)


@dataclass(frozen=True)
class _Start:
    bill_id: uuid.UUID
    owner_id: uuid.UUID
    wallet_id: uuid.UUID
    request_id: str
    moment: datetime


_START_PENDING = (
    "UPDATE bills SET status = $1, wallet_id = $2, vend_request_id = $3, "
    "processing_since = $4, updated_at = $5 "
    "WHERE id = $6 AND user_id = $7 AND " + guard(START_PAYMENT, 8) + " RETURNING *"
)


class _NotPending(Exception):
    """The bill did not move to processing; nothing was written."""


async def _start_on_sqlite(conn: sqlite_engine.Client, start: _Start) -> PaymentStarted:
    """SQLite: the bill's move, the conditional debit and its ledger row in one
    transaction that runs whole in the connection's thread (one trip instead
    of five). The single writer serializes it against every other write."""
    move = sql.for_sqlite(
        _START_PENDING,
        START_PAYMENT.target.value,
        start.wallet_id,
        start.request_id,
        start.moment,
        start.moment,
        start.bill_id,
        start.owner_id,
        *guard_values(START_PAYMENT, start.moment),
    )

    def begin(db: sqlite3.Connection) -> tuple[dict[str, Any], int]:
        moved = db.execute(*move).fetchone()
        if moved is None:
            raise _NotPending
        row = dict(moved)
        debited = wallets.debit_in_sqlite(
            db,
            start.wallet_id,
            start.owner_id,
            int(row["amount_minor"]),
            start.moment,
            bill_id=start.bill_id,
        )
        return row, debited.balance_after_minor

    try:
        row, balance = await conn.run_transaction(begin)
    except _NotPending:
        await _payable_bill(conn, start.bill_id, start.owner_id, start.moment)
        raise RuntimeError("bill did not move although it is payable") from None  # pragma: no cover
    return PaymentStarted(Bill._init_from_db(**row), start.request_id, balance)


async def _payable_bill(
    conn: BaseDBAsyncClient, bill_id: uuid.UUID, owner_id: uuid.UUID, moment: datetime
) -> Bill:
    """Why a payment could not start, as far as the bill goes: BillNotFound,
    or BillNotPayable from the domain rules; the bill if it is payable."""
    bill = await Bill.get_or_none(id=bill_id, user_id=owner_id, using_db=conn)
    if bill is None:
        raise BillNotFound(str(bill_id))
    check_payable(BillStatus(bill.status), bill.expires_at, moment)
    return bill


# PostgreSQL: pending → processing, the conditional debit and its ledger row
# in one statement (atomic by itself), instead of BEGIN, three statements and
# COMMIT. The bill's row is locked first (FOR UPDATE), so of two payments of
# one bill the second finds it no longer pending and writes nothing; the
# wallet's UPDATE re-checks the balance after any concurrent debit, so the
# balance cannot go below zero; nothing is written unless all of it is.
_START_IN_ONE = (
    "WITH bill AS ("
    "SELECT id, amount_minor FROM bills "
    "WHERE id = $1 AND user_id = $2 AND " + guard(START_PAYMENT, 3) + " FOR UPDATE"
    "), debit AS ("
    "UPDATE wallets SET balance_minor = wallets.balance_minor - bill.amount_minor, "
    "updated_at = $5 FROM bill "
    "WHERE wallets.id = $6 AND wallets.user_id = $7 AND "
    + wallets.debit_guard("wallets.balance_minor", "bill.amount_minor")
    + " "
    "RETURNING bill.id AS bill_id, bill.amount_minor, wallets.balance_minor AS balance_after"
    "), moved AS ("
    "UPDATE bills SET status = $8, wallet_id = $9, vend_request_id = $10, "
    "processing_since = $11, updated_at = $12 FROM debit "
    "WHERE bills.id = debit.bill_id RETURNING bills.*"
    "), entry AS ("
    "INSERT INTO ledger_entries (id, wallet_id, kind, amount_minor, balance_after_minor, "
    "bill_id, created_at) "
    "SELECT $13, $14, $15, -debit.amount_minor, debit.balance_after, debit.bill_id, $16 FROM debit"
    ") SELECT moved.*, debit.balance_after AS debit_balance_after FROM moved CROSS JOIN debit"
)


async def _start_in_one_statement(conn: BaseDBAsyncClient, start: _Start) -> PaymentStarted:
    bill_id, owner_id, wallet_id = start.bill_id, start.owner_id, start.wallet_id
    request_id, moment = start.request_id, start.moment
    for _ in range(_START_ATTEMPTS):
        found = await sql.rows(
            conn,
            _START_IN_ONE,
            bill_id,
            owner_id,
            *guard_values(START_PAYMENT, moment),
            moment,
            wallet_id,
            owner_id,
            START_PAYMENT.target.value,
            wallet_id,
            request_id,
            moment,
            moment,
            uuid.uuid4(),
            wallet_id,
            wallets.DEBIT,
            moment,
        )
        if found:
            row = found[0]
            balance = int(row.pop("debit_balance_after"))
            return PaymentStarted(Bill._init_from_db(**row), request_id, balance)
        # Nothing was written; say why. If the bill is payable and the wallet
        # covers it now (funds arrived meanwhile), try again.
        bill = await _payable_bill(conn, bill_id, owner_id, moment)
        wallet = await wallets.owned_wallet(wallet_id, owner_id)
        if wallet.balance_minor < bill.amount_minor:
            raise InsufficientFunds(str(wallet_id))
    # The balance kept changing under us: refuse, having written nothing.
    raise InsufficientFunds(str(wallet_id))


_START_ATTEMPTS = 3

_COMPLETE = (
    "UPDATE bills SET status = $1, token = $2, units = $3, receipt_number = $4, "
    "tariff_minor_per_kwh = $5, paid_at = $6, updated_at = $7 "
    "WHERE id = $8 AND " + guard(COMPLETE_PAYMENT, 9) + " RETURNING *"
)
# PostgreSQL: the same update and its outbox row in one statement (atomic by
# itself), instead of BEGIN, two statements and COMMIT.
_COMPLETE_WITH_EVENT = (
    "WITH moved AS (" + _COMPLETE + "), event AS (" + OUTBOX_INSERT + " "
    "SELECT $10, $11, $12, $13, 0, $14 FROM moved) "
    "SELECT * FROM moved"
)


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
        wallet_balance_minor = await wallets.balance_of(_debited_wallet(bill))
    values = (
        COMPLETE_PAYMENT.target.value,
        token,
        str(units),
        receipt_number,
        tariff_minor_per_kwh,
        moment,
        moment,
        bill.id,
        *guard_values(COMPLETE_PAYMENT, moment),
    )
    paid = _Paid(token, units, receipt_number)
    event = new_event(paid.payload(bill, wallet_balance_minor), moment)
    event_values = outbox_values(event, moment)
    conn = connections.get("default")
    if sql.is_sqlite(conn):
        moved = await _complete_on_sqlite(sqlite_engine.own_client(conn), values, event_values)
    else:
        moved = await sql.models(conn, Bill, _COMPLETE_WITH_EVENT, *values, *event_values)
    if not moved:
        return Settled(await Bill.get(id=bill.id), None, None)
    return Settled(moved[0], wallet_balance_minor, event)


async def _complete_on_sqlite(
    conn: sqlite_engine.Client, values: tuple[Any, ...], event_values: tuple[Any, ...]
) -> list[Bill]:
    """SQLite: the update and its outbox row in one transaction that runs whole
    in the connection's thread (one trip instead of four)."""
    move = sql.for_sqlite(_COMPLETE, *values)
    event = sql.for_sqlite(OUTBOX_ROW, *event_values)

    def complete(db: sqlite3.Connection) -> dict[str, Any] | None:
        moved = db.execute(*move).fetchone()
        if moved is None:
            return None
        db.execute(*event)
        return dict(moved)

    row = await conn.run_transaction(complete)
    return [] if row is None else [Bill._init_from_db(**row)]


@dataclass(frozen=True)
class _Paid:
    """What the provider's vend told: the payment_completed event of the bill
    it paid, once the balance to tell is known."""

    token: str
    units: Decimal
    receipt_number: str

    def payload(self, bill: Bill, wallet_balance_minor: int) -> PaymentCompleted:
        return PaymentCompleted(
            user_id=_owner(bill),
            bill=_summary(bill),
            wallet_id=_debited_wallet(bill),
            token=self.token,
            units=self.units,
            receipt_number=self.receipt_number,
            wallet_balance_minor=wallet_balance_minor,
        )


_FAIL = (
    "UPDATE bills SET status = $1, failure_reason = $2, updated_at = $3 "
    "WHERE id = $4 AND " + guard(FAIL_PAYMENT, 5) + " RETURNING *"
)


async def fail_payment(bill_id: uuid.UUID, reason: str, now: datetime | None = None) -> Settled:
    """processing → failed with the debit refunded, and its payment_failed
    event; a second call changes nothing."""
    moment = now or datetime.now(UTC)
    async with in_transaction() as conn:
        moved = await sql.models(
            conn,
            Bill,
            _FAIL,
            FAIL_PAYMENT.target.value,
            reason[:255],
            moment,
            bill_id,
            *guard_values(FAIL_PAYMENT, moment),
        )
        if not moved:
            return Settled(await Bill.get(id=bill_id, using_db=conn), None, None)
        bill = moved[0]
        wallet_id = _debited_wallet(bill)
        refund = await wallets.credit(
            conn, wallet_id, bill.amount_minor, moment, kind=wallets.REFUND, bill_id=bill.id
        )
        failed = PaymentFailed(
            user_id=_owner(bill),
            bill=_summary(bill),
            wallet_id=wallet_id,
            reason=reason,
            refunded_minor=bill.amount_minor,
            wallet_balance_minor=refund.balance_after_minor,
        )
        event = await record_event(conn, failed, moment)
    return Settled(bill, refund.balance_after_minor, event)


async def stuck_in_processing(older_than: datetime) -> list[Bill]:
    return await Bill.filter(
        status=BillStatus.PROCESSING.value, processing_since__lte=older_than
    ).order_by("processing_since")
