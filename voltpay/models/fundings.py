"""Funding intents and operator credits: the statements that move them, each
a conditional update so that of any number of concurrent settlers of one
intent (webhooks, reconcilers on several daemons) exactly one moves it; the
credit goes through ``voltpay.models.money`` in the same transaction."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from voltpay.domain.errors import (
    CreditAlreadyReversed,
    CreditNotFound,
    IdempotencyKeyBusy,
    WalletNotFound,
)
from voltpay.domain.events import CreditReversed, Event, WalletFunded
from voltpay.domain.fundings import FundingStatus
from voltpay.models import idempotency, money, sql
from voltpay.models.idempotency import Key, StoredResponse
from voltpay.models.outbox import record_event
from voltpay.models.tables import Funding, OperatorAction, OperatorCredit, User, Wallet
from voltpay.models.wallets import GATEWAY, OPERATOR

PENDING = FundingStatus.PENDING.value


def new_reference() -> str:
    """Ours, unique, and nothing a customer could guess another's from."""
    return "vp_" + secrets.token_hex(12)


async def create_intent(
    *,
    user_id: uuid.UUID,
    wallet_id: uuid.UUID,
    amount_minor: int,
    currency: str,
    ttl_seconds: int,
    first_check_seconds: float,
) -> Funding:
    """A pending intent for the owner's wallet (WalletNotFound otherwise),
    written before the gateway hears of it: whatever the gateway later says
    of its reference finds it."""
    now = datetime.now(UTC)
    if not await Wallet.filter(id=wallet_id, user_id=user_id).exists():
        raise WalletNotFound(str(wallet_id))
    return await Funding.create(
        id=uuid.uuid4(),
        user_id=user_id,
        wallet_id=wallet_id,
        reference=new_reference(),
        amount_minor=amount_minor,
        currency=currency,
        status=PENDING,
        next_check_at=now + timedelta(seconds=first_check_seconds),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
        updated_at=now,
    )


async def set_checkout(funding_id: uuid.UUID, url: str, access_code: str) -> None:
    await Funding.filter(id=funding_id).update(
        checkout_url=url, access_code=access_code, updated_at=datetime.now(UTC)
    )


async def by_reference(reference: str) -> Funding | None:
    return await Funding.get_or_none(reference=reference)


async def owned(funding_id: uuid.UUID, user_id: uuid.UUID) -> Funding | None:
    return await Funding.get_or_none(id=funding_id, user_id=user_id)


async def due(now: datetime, limit: int = 50) -> list[Funding]:
    """Pending intents whose next check is due, the most overdue first."""
    return (
        await Funding.filter(status=PENDING, next_check_at__lte=now)
        .order_by("next_check_at")
        .limit(limit)
    )


async def postpone(funding_id: uuid.UUID, checks: int, next_check_at: datetime) -> None:
    await Funding.filter(id=funding_id, status=PENDING).update(
        checks=checks, next_check_at=next_check_at, updated_at=datetime.now(UTC)
    )


async def move(funding_id: uuid.UUID, target: FundingStatus, reason: str | None = None) -> bool:
    """pending → ``target`` (not a credit); False when it was no longer pending."""
    now = datetime.now(UTC)
    moved = await Funding.filter(id=funding_id, status=PENDING).update(
        status=target.value,
        review_reason=reason[:255] if reason else None,
        settled_at=now,
        updated_at=now,
    )
    return bool(moved)


_SUCCEED = (
    "UPDATE fundings SET status = $1, settled_at = $2, updated_at = $3 "
    "WHERE id = $4 AND status = $5 RETURNING id"
)


async def credit_intent(funding: Funding) -> Event | None:
    """pending → succeeded, the wallet credited and ``wallet_funded``
    recorded, in one transaction; None (nothing written) when the intent was
    no longer pending. Raises BalanceLimitReached, having written nothing."""
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        moved = await sql.rows(
            conn, _SUCCEED, FundingStatus.SUCCEEDED.value, now, now, funding.id, PENDING
        )
        if not moved:
            return None
        owner_id: uuid.UUID = funding.user_id  # type: ignore[attr-defined]
        movement = await money.path(conn).credit(
            conn,
            funding.wallet_id,
            funding.amount_minor,
            now,
            owner_id=owner_id,
            source=GATEWAY,
            funding_id=funding.id,
        )
        await (
            Funding.filter(id=funding.id)
            .using_db(conn)
            .update(transaction_id=movement.transaction_id)
        )
        funded = WalletFunded(
            user_id=owner_id,
            wallet_id=funding.wallet_id,
            transaction_id=movement.transaction_id,
            amount_minor=funding.amount_minor,
            balance_minor=movement.balance_after_minor,
            source=GATEWAY,
            reference=funding.reference,
        )
        return await record_event(conn, funded, now)


# -- operators -----------------------------------------------------------------


@dataclass(frozen=True)
class Credited:
    credit: OperatorCredit
    balance_minor: int


Answer = Callable[[Credited], StoredResponse]


async def credit_by_operator(
    operator: User,
    wallet_id: uuid.UUID,
    amount_minor: int,
    reason: str,
    *,
    claim: tuple[Key, Answer] | None = None,
) -> Credited:
    """An operator's credit of any wallet, its audit row and ``wallet_funded``
    in one transaction, with the Idempotency-Key's answer stored in it when a
    key is claimed, so a retry replays the credit rather than making another.
    WalletNotFound, BalanceLimitReached: nothing written."""
    now = datetime.now(UTC)
    credit_id = uuid.uuid4()
    async with in_transaction() as conn:
        wallet = await Wallet.get_or_none(id=wallet_id, using_db=conn)
        if wallet is None:
            raise WalletNotFound("no such wallet")
        movement = await money.path(conn).credit(
            conn, wallet_id, amount_minor, now, source=OPERATOR, funding_id=credit_id
        )
        credit = await OperatorCredit.create(
            id=credit_id,
            wallet_id=wallet_id,
            operator_id=operator.id,
            amount_minor=amount_minor,
            reason=reason,
            transaction_id=movement.transaction_id,
            created_at=now,
            using_db=conn,
        )
        await _audit(conn, operator, "credit", wallet_id, credit_id, amount_minor, reason, now)
        owner_id: uuid.UUID = wallet.user_id  # type: ignore[attr-defined]
        funded = WalletFunded(
            user_id=owner_id,
            wallet_id=wallet_id,
            transaction_id=movement.transaction_id,
            amount_minor=amount_minor,
            balance_minor=movement.balance_after_minor,
            source=OPERATOR,
        )
        await record_event(conn, funded, now)
        credited = Credited(credit, movement.balance_after_minor)
        await _keep_answer(conn, claim, credited)
    return credited


async def reverse_credit(
    operator: User,
    credit_id: uuid.UUID,
    reason: str,
    *,
    claim: tuple[Key, Answer] | None = None,
) -> Credited:
    """An operator's credit taken back once, with its audit row and
    ``credit_reversed`` (the customer is told), in one transaction.
    CreditNotFound, CreditAlreadyReversed, InsufficientFunds
    (the money was spent): nothing written."""
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        taken = (
            await OperatorCredit.filter(id=credit_id, reversed_at__isnull=True)
            .using_db(conn)
            .update(reversed_at=now)
        )
        if not taken:
            if await OperatorCredit.filter(id=credit_id).using_db(conn).exists():
                raise CreditAlreadyReversed("this credit was already reversed")
            raise CreditNotFound("no such credit")
        credit = await OperatorCredit.get(id=credit_id, using_db=conn)
        movement = await money.path(conn).reverse(
            conn, credit.wallet_id, credit.amount_minor, now, source=OPERATOR, funding_id=credit_id
        )
        credit.reversal_transaction_id = movement.transaction_id
        await credit.save(using_db=conn, update_fields=["reversal_transaction_id"])
        await _audit(
            conn, operator, "reverse", credit.wallet_id, credit_id, credit.amount_minor, reason, now
        )
        wallet = await Wallet.get(id=credit.wallet_id, using_db=conn)
        taken_back = CreditReversed(
            user_id=wallet.user_id,  # type: ignore[attr-defined]
            wallet_id=credit.wallet_id,
            transaction_id=movement.transaction_id,
            credit_id=credit_id,
            amount_minor=credit.amount_minor,
            balance_minor=movement.balance_after_minor,
        )
        await record_event(conn, taken_back, now)
        reversed_ = Credited(credit, movement.balance_after_minor)
        await _keep_answer(conn, claim, reversed_)
    return reversed_


async def _keep_answer(
    conn: BaseDBAsyncClient, claim: tuple[Key, Answer] | None, done: Credited
) -> None:
    if claim is None:
        return
    key, answer = claim
    if not await idempotency.complete(conn, key, answer(done)):
        raise IdempotencyKeyBusy("the Idempotency-Key claim was released")


async def _audit(
    conn: BaseDBAsyncClient,
    operator: User,
    action: str,
    wallet_id: uuid.UUID,
    subject_id: uuid.UUID,
    amount_minor: int,
    reason: str,
    now: datetime,
) -> None:
    await OperatorAction.create(
        id=uuid.uuid4(),
        operator_id=operator.id,
        operator_username=operator.username,
        action=action,
        wallet_id=wallet_id,
        subject_id=subject_id,
        amount_minor=amount_minor,
        reason=reason,
        created_at=now,
        using_db=conn,
    )
