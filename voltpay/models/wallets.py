"""The queries that move money. A balance changes only through a conditional
UPDATE in the same transaction as its ledger row, so the balance always equals
the ledger and never drops below zero, whatever runs concurrently."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F
from tortoise.functions import Sum

from voltpay.models.tables import LedgerEntry, Wallet

CREDIT = "credit"
DEBIT = "debit"
REFUND = "refund"


class InsufficientFunds(Exception):
    pass


class WalletNotFound(Exception):
    pass


@dataclass(frozen=True)
class Movement:
    transaction_id: uuid.UUID
    wallet_id: uuid.UUID
    balance_after_minor: int


async def _balance(conn: BaseDBAsyncClient, wallet_id: uuid.UUID) -> int:
    wallet = await Wallet.get(id=wallet_id, using_db=conn)
    return int(wallet.balance_minor)


async def _write_entry(
    conn: BaseDBAsyncClient,
    wallet_id: uuid.UUID,
    kind: str,
    signed_amount_minor: int,
    bill_id: uuid.UUID | None,
    now: datetime,
) -> Movement:
    balance_after = await _balance(conn, wallet_id)
    entry = await LedgerEntry.create(
        id=uuid.uuid4(),
        wallet_id=wallet_id,
        kind=kind,
        amount_minor=signed_amount_minor,
        balance_after_minor=balance_after,
        bill_id=bill_id,
        created_at=now,
        using_db=conn,
    )
    return Movement(entry.id, wallet_id, balance_after)


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
    query = Wallet.filter(id=wallet_id)
    if owner_id is not None:
        query = query.filter(user_id=owner_id)
    changed = await query.using_db(conn).update(
        balance_minor=F("balance_minor") + amount_minor, updated_at=now
    )
    if changed != 1:
        raise WalletNotFound(str(wallet_id))
    return await _write_entry(conn, wallet_id, kind, amount_minor, bill_id, now)


async def debit(
    conn: BaseDBAsyncClient,
    wallet_id: uuid.UUID,
    amount_minor: int,
    now: datetime,
    *,
    bill_id: uuid.UUID | None,
) -> Movement:
    if amount_minor <= 0:
        raise ValueError("a debit must be positive")
    changed = (
        await Wallet.filter(id=wallet_id, balance_minor__gte=amount_minor)
        .using_db(conn)
        .update(balance_minor=F("balance_minor") - amount_minor, updated_at=now)
    )
    if changed != 1:
        raise InsufficientFunds(str(wallet_id))
    return await _write_entry(conn, wallet_id, DEBIT, -amount_minor, bill_id, now)


async def owned_wallet(wallet_id: uuid.UUID, owner_id: uuid.UUID) -> Wallet:
    wallet = await Wallet.get_or_none(id=wallet_id, user_id=owner_id)
    if wallet is None:
        raise WalletNotFound(str(wallet_id))
    return wallet


async def primary_wallet_id(owner_id: uuid.UUID) -> uuid.UUID:
    wallet_ids = (
        await Wallet.filter(user_id=owner_id)
        .order_by("created_at")
        .limit(1)
        .values_list("id", flat=True)
    )
    if not wallet_ids:
        raise WalletNotFound(str(owner_id))
    return wallet_ids[0]  # type: ignore[return-value]


async def ledger_sum(wallet_id: uuid.UUID) -> int:
    rows = (
        await LedgerEntry.filter(wallet_id=wallet_id)
        .annotate(total=Sum("amount_minor"))
        .values_list("total", flat=True)
    )
    return int(rows[0] or 0) if rows else 0  # type: ignore[arg-type]
