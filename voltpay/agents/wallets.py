"""The wallets agent: the sandbox's instant self-credit (add-funds in
sandbox funding mode), marked as a sandbox credit in the ledger and its
event. In gateway mode it credits nothing: money comes in only through the
fundings agent, from a verified payment or an operator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from voltpay.agents.mailbox import Mailbox
from voltpay.domain.errors import (
    IdempotencyKeyBusy,
    SandboxCreditsOff,
)
from voltpay.domain.events import WalletFunded
from voltpay.models import idempotency, money
from voltpay.models.idempotency import Key as IdempotencyKey
from voltpay.models.idempotency import StoredResponse
from voltpay.models.outbox import record_event
from voltpay.models.wallets import SANDBOX
from voltpay.observability.metrics import Metrics


@dataclass(frozen=True)
class AddFunds:
    user_id: uuid.UUID
    wallet_id: uuid.UUID
    amount_minor: int
    # Under an Idempotency-Key: the request's claim, and its answer, stored in
    # the credit's own transaction.
    idempotency: IdempotencyKey | None = None
    answer: Callable[[FundsAdded], StoredResponse] | None = None


@dataclass(frozen=True)
class FundsAdded:
    wallet_id: uuid.UUID
    balance_minor: int
    transaction_id: uuid.UUID


class WalletsAgent:
    name = "wallets"

    def __init__(
        self,
        app: Any,
        *,
        metrics: Metrics,
        capacity: int,
        concurrency: int,
        on_events: Callable[[], None],
        sandbox: bool,
    ) -> None:
        self._on_events = on_events
        self._sandbox = sandbox
        self.mailbox: Mailbox[AddFunds, FundsAdded] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    async def handle(self, command: AddFunds) -> FundsAdded:
        if not self._sandbox:
            raise SandboxCreditsOff("a wallet is funded by a payment: see the funding intents")
        now = datetime.now(UTC)
        async with in_transaction() as conn:
            movement = await money.path(conn).credit(
                conn,
                command.wallet_id,
                command.amount_minor,
                now,
                owner_id=command.user_id,
                source=SANDBOX,
            )
            funded = WalletFunded(
                user_id=command.user_id,
                wallet_id=command.wallet_id,
                transaction_id=movement.transaction_id,
                amount_minor=command.amount_minor,
                balance_minor=movement.balance_after_minor,
                source=SANDBOX,
            )
            await record_event(conn, funded, now)
            funds = FundsAdded(
                command.wallet_id, movement.balance_after_minor, movement.transaction_id
            )
            if command.idempotency is not None and command.answer is not None:
                answered = command.answer(funds)
                if not await idempotency.complete(conn, command.idempotency, answered):
                    raise IdempotencyKeyBusy("the Idempotency-Key claim was released")
        self._on_events()
        return funds
