"""Wallets: the ledger's kinds, the wallet rules as SQL, and the queries that
read wallets. The statements that move money are in ``voltpay.models.money``:
a balance changes only through a conditional UPDATE in the same transaction as
its ledger row, so the balance always equals the ledger and never drops below
zero, whatever runs concurrently."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any, Final

from tortoise.functions import Sum
from tortoise.queryset import ValuesListQuery

from voltpay.domain.errors import WalletNotFound
from voltpay.models.tables import LedgerEntry, Wallet

CREDIT = "credit"
DEBIT = "debit"
REFUND = "refund"
# An operator's credit taken back (negative, as a debit is).
REVERSAL = "reversal"

# Where a credit's money came from (ledger_entries.source).
SANDBOX: Final = "sandbox"
GATEWAY: Final = "gateway"
OPERATOR: Final = "operator"


def debit_guard(balance: str, amount: str) -> str:
    """SQL: ``domain.wallets.may_debit`` of the column ``balance`` and the
    expression ``amount`` (positive by the caller's check)."""
    return f"{balance} >= {amount}"


def credit_guard(balance: str, room: str) -> str:
    """SQL: ``domain.wallets.may_credit``, with ``room`` bound to
    ``MAX_BALANCE_MINOR - amount`` (the amount positive by the caller's check)."""
    return f"{balance} <= {room}"


async def balance_of(wallet_id: uuid.UUID) -> int:
    wallet = await Wallet.get(id=wallet_id)
    return int(wallet.balance_minor)


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


async def other_currency(currency: str) -> str | None:
    """A currency some wallet holds other than ``currency``, if any."""
    found = await Wallet.exclude(currency=currency).limit(1).values_list("currency", flat=True)
    return str(found[0]) if found else None
