"""The fundings agent: money in from a payment the gateway confirms, or from
an operator who answers for it.

A funding intent is written pending before the gateway hears of its
reference. A ``charge.success`` webhook is never trusted alone: the agent
asks the gateway's verify call and credits only when status, reference,
amount and currency all agree (``voltpay.domain.fundings.decide``). The
credit moves the intent pending → succeeded in the credit's own transaction,
so of any number of webhooks and reconcilers on any number of daemons,
exactly one credits a reference.

Webhooks get lost: the reconciler asks the gateway about every intent still
pending ``reconcile_after_seconds`` after it was made, and again with
doubling waits, one daemon at a time per intent (a named lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from voltpay.agents.mailbox import Mailbox
from voltpay.bridges.paystack import GatewayError, PaymentGateway, UnknownReference
from voltpay.config.settings import FundingSettings
from voltpay.domain.errors import (
    AmountBelowMinimum,
    BalanceLimitReached,
    GatewayUnavailable,
    WalletNotFound,
)
from voltpay.domain.fundings import Answer, FundingStatus, Intent, Step, decide, next_wait
from voltpay.domain.money import to_minor
from voltpay.models import fundings as store
from voltpay.models import leases
from voltpay.models.fundings import Credited
from voltpay.models.idempotency import Key, StoredResponse
from voltpay.models.leases import Lease
from voltpay.models.tables import Funding, User
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.agents.fundings")


@dataclass(frozen=True)
class StartFunding:
    user_id: uuid.UUID
    wallet_id: uuid.UUID
    amount_minor: int


@dataclass(frozen=True)
class ChargeSucceeded:
    """A signed ``charge.success`` named this reference."""

    reference: str


@dataclass(frozen=True)
class CreditWallet:
    operator: User
    wallet_id: uuid.UUID
    amount_minor: int
    reason: str
    claim: tuple[Key, Callable[[Credited], StoredResponse]] | None = None


@dataclass(frozen=True)
class ReverseCredit:
    operator: User
    credit_id: uuid.UUID
    reason: str
    claim: tuple[Key, Callable[[Credited], StoredResponse]] | None = None


FundingCommand = StartFunding | ChargeSucceeded | CreditWallet | ReverseCredit
# What a webhook came to: credited, duplicate (already settled), unknown,
# deferred (the gateway could not be asked: the reconciler asks soon), or
# the intent's new status.
FundingAnswer = Any


class FundingsAgent:
    name = "fundings"

    def __init__(
        self,
        app: Any,
        *,
        settings: FundingSettings,
        currency: str,
        gateway: PaymentGateway | None,
        metrics: Metrics,
        capacity: int,
        concurrency: int,
        on_events: Callable[[], None],
        instance_id: uuid.UUID,
    ) -> None:
        self._settings = settings
        self._currency = currency
        self._gateway = gateway
        self._metrics = metrics
        self._on_events = on_events
        # A verify call takes at most the gateway timeout; the credit little more.
        self._lease = Lease(instance_id, 2 * settings.timeout_seconds + 5)
        self._reconciler: asyncio.Task[None] | None = None
        self._stop_reconciling = asyncio.Event()
        self.mailbox: Mailbox[FundingCommand, FundingAnswer] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    async def handle(self, command: FundingCommand) -> FundingAnswer:
        if isinstance(command, StartFunding):
            return await self._start(command)
        if isinstance(command, ChargeSucceeded):
            return await self.confirm(command.reference)
        if isinstance(command, CreditWallet):
            credited = await store.credit_by_operator(
                command.operator,
                command.wallet_id,
                command.amount_minor,
                command.reason,
                claim=command.claim,
            )
            log.info("operator credit %s of wallet %s", credited.credit.id, command.wallet_id)
            self._metrics.fundings.labels(outcome="operator_credited").inc()
        else:
            credited = await store.reverse_credit(
                command.operator, command.credit_id, command.reason, claim=command.claim
            )
            log.info("operator credit %s reversed", command.credit_id)
            self._metrics.fundings.labels(outcome="operator_reversed").inc()
        self._on_events()
        return credited

    # -- a customer's intent ---------------------------------------------------

    async def _start(self, command: StartFunding) -> Funding:
        if self._gateway is None:  # pragma: no cover - gateway mode always has one
            raise GatewayUnavailable("no payment gateway is configured")
        minimum = self._settings.minimum_amount
        if command.amount_minor < to_minor(minimum):
            raise AmountBelowMinimum(f"amount must be at least {minimum:.2f} to pay on the gateway")
        try:
            funding = await store.create_intent(
                user_id=command.user_id,
                wallet_id=command.wallet_id,
                amount_minor=command.amount_minor,
                currency=self._currency,
                ttl_seconds=self._settings.intent_ttl_seconds,
                first_check_seconds=self._settings.reconcile_after_seconds,
            )
        except WalletNotFound:
            raise WalletNotFound("no such wallet") from None
        self._metrics.fundings.labels(outcome="initiated").inc()
        try:
            checkout = await self._gateway.initialize(
                email=f"{command.user_id.hex}@{self._settings.customer_email_domain}",
                amount_minor=command.amount_minor,
                currency=self._currency,
                reference=funding.reference,
                callback_url=self._settings.callback_url,
            )
        except GatewayError as exc:
            # Whether the gateway made the transaction is unknown: the intent
            # stays pending, and the reconciler's verify call settles it (a
            # reference nobody paid expires).
            log.warning("initialize of funding %s failed: %s", funding.id, exc)
            raise GatewayUnavailable(
                "the payment gateway could not be reached; nothing was charged, try again"
            ) from None
        await store.set_checkout(funding.id, checkout.authorization_url, checkout.access_code)
        funding.checkout_url = checkout.authorization_url
        funding.access_code = checkout.access_code
        return funding

    # -- settling one reference -------------------------------------------------

    async def confirm(self, reference: str) -> str:
        """What a signed ``charge.success`` for ``reference`` came to."""
        funding = await store.by_reference(reference)
        if funding is None:
            log.warning("charge.success for a reference that is not ours: nothing credited")
            self._metrics.gateway_webhooks.labels(result="unknown_reference").inc()
            return "unknown"
        if funding.status != FundingStatus.PENDING:
            self._metrics.gateway_webhooks.labels(result="duplicate").inc()
            return "duplicate"
        outcome = await self._verify_and_settle(funding, from_webhook=True)
        self._metrics.gateway_webhooks.labels(result=outcome).inc()
        return outcome

    async def _verify_and_settle(self, funding: Funding, *, from_webhook: bool) -> str:
        assert self._gateway is not None
        try:
            verified = await asyncio.wait_for(
                self._gateway.verify(funding.reference), self._settings.timeout_seconds
            )
            answer: Answer | None = Answer(
                verified.reference, verified.status, verified.amount_minor, verified.currency
            )
        except UnknownReference:
            answer = None
        except (GatewayError, TimeoutError) as exc:
            log.warning("verify of funding %s failed: %s; asking again later", funding.id, exc)
            when = datetime.now(UTC) if from_webhook else self._later(funding)
            await store.postpone(funding.id, funding.checks + (0 if from_webhook else 1), when)
            return "deferred"
        return await self._settle(funding, answer)

    def _later(self, funding: Funding) -> datetime:
        wait = next_wait(
            funding.checks + 1,
            self._settings.reconcile_after_seconds,
            self._settings.reconcile_max_wait_seconds,
        )
        return datetime.now(UTC) + timedelta(seconds=wait)

    async def _settle(self, funding: Funding, answer: Answer | None) -> str:
        intent = Intent(
            funding.reference, funding.amount_minor, funding.currency, funding.expires_at
        )
        decision = decide(intent, answer, datetime.now(UTC))
        if decision.step is Step.CREDIT:
            try:
                event = await store.credit_intent(funding)
            except BalanceLimitReached:
                return await self._review(
                    funding, "the credit would pass the wallet's largest balance"
                )
            if event is None:
                return "duplicate"
            self._on_events()
            self._metrics.fundings.labels(outcome="credited").inc()
            log.info("funding %s credited", funding.id)
            return "credited"
        if decision.step is Step.REVIEW:
            return await self._review(funding, decision.why)
        if decision.step is Step.FAIL:
            if await store.move(funding.id, FundingStatus.FAILED, decision.why):
                self._metrics.fundings.labels(outcome="failed").inc()
            return FundingStatus.FAILED.value
        if decision.step is Step.EXPIRE:
            if await store.move(funding.id, FundingStatus.EXPIRED, decision.why):
                self._metrics.fundings.labels(outcome="expired").inc()
            return FundingStatus.EXPIRED.value
        await store.postpone(funding.id, funding.checks + 1, self._later(funding))
        return "deferred"

    async def _review(self, funding: Funding, why: str) -> str:
        if await store.move(funding.id, FundingStatus.NEEDS_REVIEW, why):
            self._metrics.fundings.labels(outcome="needs_review").inc()
            log.error("funding %s needs review, not credited: %s", funding.id, why)
        return FundingStatus.NEEDS_REVIEW.value

    # -- the reconciler ------------------------------------------------------------

    def start_reconciler(self) -> None:
        if self._gateway is not None and self._reconciler is None:
            self._stop_reconciling.clear()
            self._reconciler = asyncio.create_task(
                self._reconcile_forever(), name="funding-reconciler"
            )

    async def stop_reconciler(self) -> None:
        """Finish the pass under way, then stop."""
        task, self._reconciler = self._reconciler, None
        if task is not None:
            self._stop_reconciling.set()
            await task

    async def _reconcile_forever(self) -> None:
        while not self._stop_reconciling.is_set():
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("funding reconciliation pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop_reconciling.wait(), self._settings.reconcile_interval_seconds
                )

    async def reconcile_once(self) -> dict[str, int]:
        """Ask the gateway about every pending intent whose check is due;
        one daemon at a time per intent. Counts what each came to."""
        outcomes: dict[str, int] = {}
        for funding in await store.due(datetime.now(UTC)):
            if self._stop_reconciling.is_set():
                break
            name = f"funding:{funding.id}"
            if not await leases.take(name, self._lease):
                continue
            try:
                fresh = await Funding.get_or_none(id=funding.id)
                if fresh is None or fresh.status != FundingStatus.PENDING:
                    continue
                outcome = await self._verify_and_settle(fresh, from_webhook=False)
            finally:
                await leases.give_back(name, self._lease.holder)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes
