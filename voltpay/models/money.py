"""Every statement that moves money, and one path per database that runs them.

``MoneyPath`` is the whole interface: ``start`` (a bill's pending → processing
move with its debit and ledger row), ``complete`` (processing → paid with its
``payment_completed`` outbox row), ``fail`` (processing → failed with its
refund, ledger row and ``payment_failed`` outbox row), ``credit`` (a
wallet's conditional credit and its ledger row, inside the caller's
transaction) and ``reverse`` (an operator credit taken back, likewise).
``path(conn)`` picks the database's path:

- ``OnSqlite`` runs a start and a completion as one transaction each, whole in
  the connection's thread (one trip instead of five);
- ``OnPostgres`` runs each of them as one statement, atomic by itself;
- a failure and a credit are the same statements on both, in a transaction.

Each statement's condition is built from the move it makes
(``voltpay.domain.bills``: START_PAYMENT, COMPLETE_PAYMENT, FAIL_PAYMENT) and
from the wallet's rules (``voltpay.domain.wallets`` through ``debit_guard`` and
``credit_guard``), so a change to when money may move is one edit in the
domain; ``tests/integration/test_money_rules.py`` checks every path against
it on both databases.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from voltpay.domain.bills import (
    COMPLETE_PAYMENT,
    FAIL_PAYMENT,
    START_PAYMENT,
    BillStatus,
    Expiry,
    Move,
    check_payable,
)
from voltpay.domain.errors import (
    BalanceLimitReached,
    BillNotFound,
    InsufficientFunds,
    WalletNotFound,
)
from voltpay.domain.events import BillSummary, Event, PaymentFailed
from voltpay.domain.money import format_minor
from voltpay.domain.wallets import MAX_BALANCE_MINOR
from voltpay.models import sql, sqlite_engine
from voltpay.models.outbox import OUTBOX_INSERT, OUTBOX_ROW, outbox_values, record_event
from voltpay.models.tables import Bill, Wallet
from voltpay.models.wallets import CREDIT, DEBIT, REFUND, REVERSAL, credit_guard, debit_guard


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


@dataclass(frozen=True)
class Start:
    """A payment to start: the bill, its owner, the wallet to debit."""

    bill_id: uuid.UUID
    owner_id: uuid.UUID
    wallet_id: uuid.UUID
    request_id: str
    moment: datetime


@dataclass(frozen=True)
class PaymentStarted:
    bill: Bill
    request_id: str
    balance_after_minor: int


@dataclass(frozen=True)
class Completion:
    """What the provider's vend told, for the bill it paid, and the event that
    says so."""

    bill_id: uuid.UUID
    token: str
    units: str
    receipt_number: str
    tariff_minor_per_kwh: int
    moment: datetime
    event: Event


@dataclass(frozen=True)
class Settled:
    bill: Bill
    wallet_balance_minor: int | None
    event: Event | None


@dataclass(frozen=True)
class Movement:
    transaction_id: uuid.UUID
    wallet_id: uuid.UUID
    balance_after_minor: int


class MoneyPath(Protocol):
    async def start(self, start: Start) -> PaymentStarted:
        """pending → processing and the debit: one winner only. Raises
        BillNotFound, BillNotPayable, InsufficientFunds or WalletNotFound, in
        every case having written nothing."""

    async def complete(self, completion: Completion) -> Bill | None:
        """processing → paid and its event; None (nothing written) when the
        bill is not in processing."""

    async def fail(self, bill_id: uuid.UUID, reason: str, moment: datetime) -> Settled:
        """processing → failed, the debit refunded, and its event; nothing
        written when the bill is not in processing."""

    async def credit(
        self,
        conn: BaseDBAsyncClient,
        wallet_id: uuid.UUID,
        amount_minor: int,
        moment: datetime,
        *,
        owner_id: uuid.UUID | None = None,
        kind: str = CREDIT,
        bill_id: uuid.UUID | None = None,
        source: str | None = None,
        funding_id: uuid.UUID | None = None,
    ) -> Movement:
        """The credit and its ledger row in the caller's transaction ``conn``.
        A REFUND gives back what a debit took; any other credit stays within
        the wallet's largest balance (BalanceLimitReached), of the owner's
        wallet when ``owner_id`` is given (WalletNotFound). ``source`` says
        where the money came from; ``funding_id`` names the funding it
        settles, credited once (IntegrityError on a second credit)."""

    async def reverse(
        self,
        conn: BaseDBAsyncClient,
        wallet_id: uuid.UUID,
        amount_minor: int,
        moment: datetime,
        *,
        funding_id: uuid.UUID,
        source: str,
    ) -> Movement:
        """A credit taken back, in the caller's transaction ``conn``: a
        conditional debit that cannot take the balance below zero
        (InsufficientFunds, WalletNotFound), and its ledger row."""


def path(conn: BaseDBAsyncClient | None = None) -> MoneyPath:
    """The path of ``conn``'s database (the default connection's if None)."""
    client = conn if conn is not None else connections.get("default")
    return _ON_SQLITE if sql.is_sqlite(client) else _ON_POSTGRES


def summary(bill: Bill) -> BillSummary:
    return BillSummary(
        bill_id=bill.id,
        meter_number=bill.meter_number,
        customer_name=bill.customer_name,
        amount_minor=bill.amount_minor,
    )


def owner(bill: Bill) -> uuid.UUID:
    found: uuid.UUID = bill.user_id  # type: ignore[attr-defined]
    return found


def debited_wallet(bill: Bill) -> uuid.UUID:
    """The wallet a paid bill was debited from. The start of a payment sets it
    in the statement that makes the bill processing, so only a broken
    invariant finds none, and that is an error rather than an event that
    names no wallet."""
    if bill.wallet_id is None:
        raise RuntimeError(f"bill {bill.id} is in payment without a wallet")
    return bill.wallet_id


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


_LEDGER_ROW = (
    "INSERT INTO ledger_entries (id, wallet_id, kind, amount_minor, balance_after_minor, "
    "bill_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_FUNDING_LEDGER_ROW = (
    "INSERT INTO ledger_entries (id, wallet_id, kind, amount_minor, balance_after_minor, "
    "bill_id, created_at, source, funding_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_DEBIT = (
    "UPDATE wallets SET balance_minor = balance_minor - $1, updated_at = $2 "
    "WHERE id = $3 AND user_id = $4 AND "
    + debit_guard("balance_minor", "$5")
    + " RETURNING balance_minor"
)
_CREDIT = (
    "UPDATE wallets SET balance_minor = balance_minor + $1, updated_at = $2 "
    "WHERE id = $3 AND user_id = $4 AND "
    + credit_guard("balance_minor", "$5")
    + " RETURNING balance_minor"
)
_CREDIT_ANY = (
    "UPDATE wallets SET balance_minor = balance_minor + $1, updated_at = $2 "
    "WHERE id = $3 AND " + credit_guard("balance_minor", "$4") + " RETURNING balance_minor"
)
_TAKE_BACK = (
    "UPDATE wallets SET balance_minor = balance_minor - $1, updated_at = $2 "
    "WHERE id = $3 AND " + debit_guard("balance_minor", "$4") + " RETURNING balance_minor"
)
_EXISTS = "SELECT 1 FROM wallets WHERE id = $1"
_REFUND = (
    "UPDATE wallets SET balance_minor = balance_minor + $1, updated_at = $2 "
    "WHERE id = $3 RETURNING balance_minor"
)
_OWNED = "SELECT 1 FROM wallets WHERE id = $1 AND user_id = $2"

_START_PENDING = (
    "UPDATE bills SET status = $1, wallet_id = $2, vend_request_id = $3, "
    "processing_since = $4, updated_at = $5 "
    "WHERE id = $6 AND user_id = $7 AND " + guard(START_PAYMENT, 8) + " RETURNING *"
)
_COMPLETE = (
    "UPDATE bills SET status = $1, token = $2, units = $3, receipt_number = $4, "
    "tariff_minor_per_kwh = $5, paid_at = $6, updated_at = $7 "
    "WHERE id = $8 AND " + guard(COMPLETE_PAYMENT, 9) + " RETURNING *"
)
_FAIL = (
    "UPDATE bills SET status = $1, failure_reason = $2, updated_at = $3 "
    "WHERE id = $4 AND " + guard(FAIL_PAYMENT, 5) + " RETURNING *"
)


def _completion_values(completion: Completion) -> tuple[Any, ...]:
    return (
        COMPLETE_PAYMENT.target.value,
        completion.token,
        completion.units,
        completion.receipt_number,
        completion.tariff_minor_per_kwh,
        completion.moment,
        completion.moment,
        completion.bill_id,
        *guard_values(COMPLETE_PAYMENT, completion.moment),
    )


class _Shared:
    """The failure and the credit: the same statements on both databases, in
    a transaction."""

    async def fail(self, bill_id: uuid.UUID, reason: str, moment: datetime) -> Settled:
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
            wallet_id = debited_wallet(bill)
            refund = await self.credit(
                conn, wallet_id, bill.amount_minor, moment, kind=REFUND, bill_id=bill.id
            )
            failed = PaymentFailed(
                user_id=owner(bill),
                bill=summary(bill),
                wallet_id=wallet_id,
                reason=reason,
                refunded_minor=bill.amount_minor,
                wallet_balance_minor=refund.balance_after_minor,
            )
            event = await record_event(conn, failed, moment)
        return Settled(bill, refund.balance_after_minor, event)

    async def credit(
        self,
        conn: BaseDBAsyncClient,
        wallet_id: uuid.UUID,
        amount_minor: int,
        moment: datetime,
        *,
        owner_id: uuid.UUID | None = None,
        kind: str = CREDIT,
        bill_id: uuid.UUID | None = None,
        source: str | None = None,
        funding_id: uuid.UUID | None = None,
    ) -> Movement:
        if amount_minor <= 0:
            raise ValueError("a credit must be positive")
        if kind == REFUND:
            # A refund gives back what a debit took: the balance was that high before.
            changed = await sql.rows(conn, _REFUND, amount_minor, moment, wallet_id)
        elif owner_id is not None:
            room = MAX_BALANCE_MINOR - amount_minor
            changed = await sql.rows(conn, _CREDIT, amount_minor, moment, wallet_id, owner_id, room)
            if not changed and await sql.rows(conn, _OWNED, wallet_id, owner_id):
                raise BalanceLimitReached(_OVER_THE_LIMIT)
        else:
            room = MAX_BALANCE_MINOR - amount_minor
            changed = await sql.rows(conn, _CREDIT_ANY, amount_minor, moment, wallet_id, room)
            if not changed and await sql.rows(conn, _EXISTS, wallet_id):
                raise BalanceLimitReached(_OVER_THE_LIMIT)
        if len(changed) != 1:
            raise WalletNotFound("no such wallet")
        balance = int(changed[0]["balance_minor"])
        entry_id = uuid.uuid4()
        await sql.execute(
            conn,
            _FUNDING_LEDGER_ROW,
            entry_id,
            wallet_id,
            kind,
            amount_minor,
            balance,
            bill_id,
            moment,
            source,
            funding_id,
        )
        return Movement(entry_id, wallet_id, balance)

    async def reverse(
        self,
        conn: BaseDBAsyncClient,
        wallet_id: uuid.UUID,
        amount_minor: int,
        moment: datetime,
        *,
        funding_id: uuid.UUID,
        source: str,
    ) -> Movement:
        if amount_minor <= 0:
            raise ValueError("a reversal must be positive")
        changed = await sql.rows(conn, _TAKE_BACK, amount_minor, moment, wallet_id, amount_minor)
        if not changed:
            if await sql.rows(conn, _EXISTS, wallet_id):
                raise InsufficientFunds(str(wallet_id))
            raise WalletNotFound("no such wallet")
        balance = int(changed[0]["balance_minor"])
        entry_id = uuid.uuid4()
        await sql.execute(
            conn,
            _FUNDING_LEDGER_ROW,
            entry_id,
            wallet_id,
            REVERSAL,
            -amount_minor,
            balance,
            None,
            moment,
            source,
            funding_id,
        )
        return Movement(entry_id, wallet_id, balance)


_OVER_THE_LIMIT = (
    "this credit would take the balance past the largest a wallet holds "
    f"({format_minor(MAX_BALANCE_MINOR)})"
)


class _NotPending(Exception):
    """The bill did not move to processing; nothing was written."""


class OnSqlite(_Shared):
    """SQLite: a start and a completion each run whole in the connection's
    thread. The single writer serializes them against every other write."""

    async def start(self, start: Start) -> PaymentStarted:
        conn = sqlite_engine.own_client(connections.get("default"))
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
            balance = _debit_in_thread(db, start, int(row["amount_minor"]))
            return row, balance

        try:
            row, balance = await conn.run_transaction(begin)
        except _NotPending:
            await _payable_bill(conn, start.bill_id, start.owner_id, start.moment)
            raise RuntimeError(
                "bill did not move although it is payable"
            ) from None  # pragma: no cover
        return PaymentStarted(Bill._init_from_db(**row), start.request_id, balance)

    async def complete(self, completion: Completion) -> Bill | None:
        conn = sqlite_engine.own_client(connections.get("default"))
        move = sql.for_sqlite(_COMPLETE, *_completion_values(completion))
        event = sql.for_sqlite(OUTBOX_ROW, *outbox_values(completion.event, completion.moment))

        def complete(db: sqlite3.Connection) -> dict[str, Any] | None:
            moved = db.execute(*move).fetchone()
            if moved is None:
                return None
            db.execute(*event)
            return dict(moved)

        row = await conn.run_transaction(complete)
        return None if row is None else Bill._init_from_db(**row)


def _debit_in_thread(db: sqlite3.Connection, start: Start, amount_minor: int) -> int:
    """The conditional debit, which cannot take the balance below zero, and its
    ledger row, in the SQLite connection's thread; the balance after."""
    wallet_id, owner_id, moment = start.wallet_id, start.owner_id, start.moment
    changed = db.execute(
        *sql.for_sqlite(_DEBIT, amount_minor, moment, wallet_id, owner_id, amount_minor)
    ).fetchone()
    if changed is None:
        if db.execute(*sql.for_sqlite(_OWNED, wallet_id, owner_id)).fetchone() is not None:
            raise InsufficientFunds(str(wallet_id))
        raise WalletNotFound(str(wallet_id))
    balance = int(changed[0])
    entry = (uuid.uuid4(), wallet_id, DEBIT, -amount_minor, balance, start.bill_id, moment)
    db.execute(*sql.for_sqlite(_LEDGER_ROW, *entry))
    return balance


# PostgreSQL: pending → processing, the conditional debit and its ledger row
# in one statement (atomic by itself). The bill's row is locked first (FOR
# UPDATE), so of two payments of one bill the second finds it no longer
# pending and writes nothing; the wallet's UPDATE re-checks the balance after
# any concurrent debit, so the balance cannot go below zero; nothing is
# written unless all of it is.
_START_IN_ONE = (
    "WITH bill AS ("
    "SELECT id, amount_minor FROM bills "
    "WHERE id = $1 AND user_id = $2 AND " + guard(START_PAYMENT, 3) + " FOR UPDATE"
    "), debit AS ("
    "UPDATE wallets SET balance_minor = wallets.balance_minor - bill.amount_minor, "
    "updated_at = $5 FROM bill "
    "WHERE wallets.id = $6 AND wallets.user_id = $7 AND "
    + debit_guard("wallets.balance_minor", "bill.amount_minor")
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
# PostgreSQL: the completion and its outbox row in one statement.
_COMPLETE_WITH_EVENT = (
    "WITH moved AS (" + _COMPLETE + "), event AS (" + OUTBOX_INSERT + " "
    "SELECT $10, $11, $12, $13, 0, $14 FROM moved) "
    "SELECT * FROM moved"
)
# A start that lost a race against a credit of the same wallet is tried again
# this often before it is refused.
_START_ATTEMPTS = 3


class OnPostgres(_Shared):
    """PostgreSQL: a start and a completion each one statement."""

    async def start(self, start: Start) -> PaymentStarted:
        conn = connections.get("default")
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
                DEBIT,
                moment,
            )
            if found:
                row = found[0]
                balance = int(row.pop("debit_balance_after"))
                return PaymentStarted(Bill._init_from_db(**row), request_id, balance)
            # Nothing was written; say why. If the bill is payable and the
            # wallet covers it now (funds arrived meanwhile), try again.
            bill = await _payable_bill(conn, bill_id, owner_id, moment)
            wallet = await Wallet.get_or_none(id=wallet_id, user_id=owner_id)
            if wallet is None:
                raise WalletNotFound(str(wallet_id))
            if wallet.balance_minor < bill.amount_minor:
                raise InsufficientFunds(str(wallet_id))
        # The balance kept changing under us: refuse, having written nothing.
        raise InsufficientFunds(str(wallet_id))

    async def complete(self, completion: Completion) -> Bill | None:
        values = _completion_values(completion)
        event_values = outbox_values(completion.event, completion.moment)
        conn = connections.get("default")
        moved = await sql.models(conn, Bill, _COMPLETE_WITH_EVENT, *values, *event_values)
        return moved[0] if moved else None


_ON_SQLITE = OnSqlite()
_ON_POSTGRES = OnPostgres()
