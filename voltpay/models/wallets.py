"""The queries that move money. A balance changes only through a conditional
UPDATE in the same transaction as its ledger row, so the balance always equals
the ledger and never drops below zero, whatever runs concurrently."""

from __future__ import annotations

import sqlite3
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.functions import Sum
from tortoise.queryset import ValuesListQuery

from voltpay.domain.errors import BalanceLimitReached, InsufficientFunds, WalletNotFound
from voltpay.domain.wallets import MAX_BALANCE_MINOR
from voltpay.models import sql
from voltpay.models.tables import LedgerEntry, Wallet

CREDIT = "credit"
DEBIT = "debit"
REFUND = "refund"


def debit_guard(balance: str, amount: str) -> str:
    """SQL: ``domain.wallets.may_debit`` of the column ``balance`` and the
    expression ``amount`` (positive by the caller's check)."""
    return f"{balance} >= {amount}"


def credit_guard(balance: str, room: str) -> str:
    """SQL: ``domain.wallets.may_credit``, with ``room`` bound to
    ``MAX_BALANCE_MINOR - amount`` (the amount positive by the caller's check)."""
    return f"{balance} <= {room}"


@dataclass(frozen=True)
class Movement:
    transaction_id: uuid.UUID
    wallet_id: uuid.UUID
    balance_after_minor: int


_LEDGER_ROW = (
    "INSERT INTO ledger_entries (id, wallet_id, kind, amount_minor, balance_after_minor, "
    "bill_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
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
_REFUND = (
    "UPDATE wallets SET balance_minor = balance_minor + $1, updated_at = $2 "
    "WHERE id = $3 RETURNING balance_minor"
)
_OWNED = "SELECT 1 FROM wallets WHERE id = $1 AND user_id = $2"


async def balance_of(wallet_id: uuid.UUID) -> int:
    wallet = await Wallet.get(id=wallet_id)
    return int(wallet.balance_minor)


async def _write_entry(
    conn: BaseDBAsyncClient,
    wallet_id: uuid.UUID,
    kind: str,
    signed_amount_minor: int,
    balance_after_minor: int,
    bill_id: uuid.UUID | None,
    now: datetime,
) -> Movement:
    entry_id = uuid.uuid4()
    await sql.execute(
        conn,
        _LEDGER_ROW,
        entry_id,
        wallet_id,
        kind,
        signed_amount_minor,
        balance_after_minor,
        bill_id,
        now,
    )
    return Movement(entry_id, wallet_id, balance_after_minor)


async def credit(
    conn: BaseDBAsyncClient,
    wallet_id: uuid.UUID,
    amount_minor: int,
    now: datetime,
    *,
    owner_id: uuid.UUID | None = None,
    kind: str = CREDIT,
    bill_id: uuid.UUID | None = None,
) -> Movement:
    if amount_minor <= 0:
        raise ValueError("a credit must be positive")
    if owner_id is None:
        # A refund gives back what a debit took: the balance was that high before.
        changed = await sql.rows(conn, _REFUND, amount_minor, now, wallet_id)
    else:
        changed = await sql.rows(
            conn, _CREDIT, amount_minor, now, wallet_id, owner_id, MAX_BALANCE_MINOR - amount_minor
        )
        if not changed and await sql.rows(conn, _OWNED, wallet_id, owner_id):
            raise BalanceLimitReached(str(wallet_id))
    if len(changed) != 1:
        raise WalletNotFound(str(wallet_id))
    balance = int(changed[0]["balance_minor"])
    return await _write_entry(conn, wallet_id, kind, amount_minor, balance, bill_id, now)


def debit_in_sqlite(
    db: sqlite3.Connection,
    wallet_id: uuid.UUID,
    owner_id: uuid.UUID,
    amount_minor: int,
    now: datetime,
    *,
    bill_id: uuid.UUID | None,
) -> Movement:
    """The conditional debit, which cannot take the balance below zero, and its
    ledger row, inside a transaction that runs whole in the SQLite connection's
    thread (``Client.run_transaction``). PostgreSQL does the same in one
    statement (``bills._START_IN_ONE``)."""
    if amount_minor <= 0:
        raise ValueError("a debit must be positive")
    changed = db.execute(
        *sql.for_sqlite(_DEBIT, amount_minor, now, wallet_id, owner_id, amount_minor)
    ).fetchone()
    if changed is None:
        if db.execute(*sql.for_sqlite(_OWNED, wallet_id, owner_id)).fetchone() is not None:
            raise InsufficientFunds(str(wallet_id))
        raise WalletNotFound(str(wallet_id))
    balance = int(changed[0])
    entry_id = uuid.uuid4()
    db.execute(
        *sql.for_sqlite(
            _LEDGER_ROW, entry_id, wallet_id, DEBIT, -amount_minor, balance, bill_id, now
        )
    )
    return Movement(entry_id, wallet_id, balance)


async def owned_wallet(wallet_id: uuid.UUID, owner_id: uuid.UUID) -> Wallet:
    wallet = await Wallet.get_or_none(id=wallet_id, user_id=owner_id)
    if wallet is None:
        raise WalletNotFound(str(wallet_id))
    return wallet


_PRIMARY_WALLETS: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()
_PRIMARY_WALLETS_KEPT = 50_000


def primary_wallet_query(owner_id: uuid.UUID) -> ValuesListQuery[Any]:
    """The id of the user's first wallet (an index on owner and creation time
    serves it)."""
    return (
        Wallet.filter(user_id=owner_id).order_by("created_at").limit(1).values_list("id", flat=True)
    )


async def primary_wallet_id(owner_id: uuid.UUID) -> uuid.UUID:
    """The user's first wallet; it never changes, so it is remembered."""
    known = _PRIMARY_WALLETS.get(owner_id)
    if known is not None:
        return known
    wallet_ids = await primary_wallet_query(owner_id)
    if not wallet_ids:
        raise WalletNotFound(str(owner_id))
    wallet_id: uuid.UUID = wallet_ids[0]  # type: ignore[assignment]
    _PRIMARY_WALLETS[owner_id] = wallet_id
    if len(_PRIMARY_WALLETS) > _PRIMARY_WALLETS_KEPT:
        _PRIMARY_WALLETS.popitem(last=False)
    return wallet_id


async def ledger_sum(wallet_id: uuid.UUID) -> int:
    rows = (
        await LedgerEntry.filter(wallet_id=wallet_id)
        .annotate(total=Sum("amount_minor"))
        .values_list("total", flat=True)
    )
    return int(rows[0] or 0) if rows else 0  # type: ignore[arg-type]
