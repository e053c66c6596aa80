"""The bills agent: verifying meters into bills and the pay saga.

Pay is three steps (ARCHITECTURE.md): debit and pending → processing in one
transaction; the vend, outside any transaction; then paid, or failed with a
refund. An outcome the provider did not confirm is never refunded and never
re-vended blindly: the bill stays processing and the reconciler asks the
provider (requery) until it knows.
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
from voltpay.bridges.electricity import (
    ElectricityProvider,
    InvalidMeterNumber,
    MeterNotFound,
    ProviderUnavailable,
    VendFailed,
    VendOutcomeUnknown,
    VendResult,
    VendStatus,
)
from voltpay.domain.errors import (
    AmountAboveMaximum,
    AmountBelowMinimum,
    InsufficientFunds,
    NotFound,
    VendRefunded,
)
from voltpay.domain.money import format_minor
from voltpay.models import bills as bill_store
from voltpay.models import leases, money, wallets
from voltpay.models.leases import Lease
from voltpay.models.tables import Bill
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.agents.bills")


@dataclass(frozen=True)
class CreateBill:
    user_id: uuid.UUID
    meter_number: str
    amount_minor: int


@dataclass(frozen=True)
class PayBill:
    user_id: uuid.UUID
    bill_id: uuid.UUID
    wallet_id: uuid.UUID | None


@dataclass(frozen=True)
class BillAnswer:
    bill: Bill
    wallet_balance_minor: int | None = None
    settled: bool = True


BillCommand = CreateBill | PayBill


class BillsAgent:
    name = "bills"

    def __init__(
        self,
        app: Any,
        *,
        provider: ElectricityProvider,
        metrics: Metrics,
        capacity: int,
        concurrency: int,
        bill_ttl_seconds: int,
        tariff_minor_per_kwh: int,
        vend_timeout_seconds: float,
        reconcile_interval_seconds: float,
        on_events: Callable[[], None],
        instance_id: uuid.UUID,
    ) -> None:
        self._provider = provider
        # A requery and a re-vend each take at most the vend timeout.
        self._reconcile_lease = Lease(instance_id, 2 * vend_timeout_seconds + 5)
        self._bill_ttl_seconds = bill_ttl_seconds
        self._tariff_minor_per_kwh = tariff_minor_per_kwh
        self._vend_timeout = vend_timeout_seconds
        self._reconcile_interval = reconcile_interval_seconds
        self._on_events = on_events
        self._reconciler: asyncio.Task[None] | None = None
        self._stop_reconciling = asyncio.Event()
        self.mailbox: Mailbox[BillCommand, BillAnswer] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    async def handle(self, command: BillCommand) -> BillAnswer:
        if isinstance(command, CreateBill):
            return await self._create(command)
        return await self._pay(command)

    async def _create(self, command: CreateBill) -> BillAnswer:
        # Unknown meters and an unreachable provider are refusals the caller
        # reads as they are.
        meter = await self._provider.verify(command.meter_number)
        if command.amount_minor < meter.minimum_amount_minor:
            raise AmountBelowMinimum(
                f"the minimum for this meter is {format_minor(meter.minimum_amount_minor)}"
            )
        if command.amount_minor > meter.maximum_amount_minor:
            raise AmountAboveMaximum(
                f"the maximum for this meter is {format_minor(meter.maximum_amount_minor)}"
            )
        bill, _ = await bill_store.create_bill(
            bill_store.NewBill(
                user_id=command.user_id,
                meter_number=meter.meter_number,
                meter_type=meter.meter_type,
                customer_name=meter.customer_name,
                address=meter.address,
                amount_minor=command.amount_minor,
                tariff_minor_per_kwh=self._tariff_minor_per_kwh,
                ttl_seconds=self._bill_ttl_seconds,
            )
        )
        self._on_events()
        return BillAnswer(bill)

    async def _pay(self, command: PayBill) -> BillAnswer:
        try:
            wallet_id = command.wallet_id or await wallets.primary_wallet_id(command.user_id)
            started = await bill_store.start_payment(command.bill_id, command.user_id, wallet_id)
        except NotFound:
            raise NotFound("no such bill or wallet") from None
        except InsufficientFunds:
            raise InsufficientFunds("the wallet balance does not cover this bill") from None
        bill = started.bill
        try:
            result = await asyncio.wait_for(
                self._provider.vend(started.request_id, bill.meter_number, bill.amount_minor),
                timeout=self._vend_timeout,
            )
        except (VendFailed, ProviderUnavailable, MeterNotFound, InvalidMeterNumber) as exc:
            settled = await bill_store.fail_payment(bill.id, str(exc) or type(exc).__name__)
            self._on_events()
            raise VendRefunded(
                "the provider could not vend this bill; the payment was refunded "
                f"(balance {format_minor(settled.wallet_balance_minor or 0)})"
            ) from None
        except (VendOutcomeUnknown, TimeoutError) as exc:
            log.warning("vend outcome unknown for bill %s: %r; reconciling", bill.id, exc)
            return BillAnswer(bill, started.balance_after_minor, settled=False)
        except Exception:
            # An answer nobody understood: the vend may have happened.
            log.exception("unexpected vend error for bill %s; reconciling", bill.id)
            return BillAnswer(bill, started.balance_after_minor, settled=False)
        settled = await self._complete(bill, result, started.balance_after_minor)
        return BillAnswer(settled.bill, settled.wallet_balance_minor, settled=True)

    async def _complete(
        self, bill: Bill, result: VendResult, balance_after_minor: int | None = None
    ) -> money.Settled:
        settled = await bill_store.complete_payment(
            bill,
            token=result.token,
            units=result.units,
            receipt_number=result.receipt_number,
            tariff_minor_per_kwh=result.tariff_minor_per_kwh,
            wallet_balance_minor=balance_after_minor,
        )
        self._on_events()
        return settled

    # -- reconciliation ---------------------------------------------------

    def start_reconciler(self) -> None:
        if self._reconciler is None:
            self._stop_reconciling.clear()
            self._reconciler = asyncio.create_task(self._reconcile_forever(), name="reconciler")

    async def stop_reconciler(self) -> None:
        """Finish the pass under way, then stop (never cancelled mid-query)."""
        task, self._reconciler = self._reconciler, None
        if task is not None:
            self._stop_reconciling.set()
            await task

    async def _reconcile_forever(self) -> None:
        while not self._stop_reconciling.is_set():
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconciliation pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_reconciling.wait(), self._reconcile_interval)

    async def reconcile_once(self, now: datetime | None = None) -> int:
        """Settle every bill whose vend has been unanswered past the timeout."""
        moment = now or datetime.now(UTC)
        await bill_store.expire_overdue(moment)
        stuck = await bill_store.stuck_in_processing(moment - timedelta(seconds=self._vend_timeout))
        settled = 0
        for bill in stuck:
            # One daemon at a time settles a bill: the others skip it.
            name = f"reconcile:{bill.id}"
            if not await leases.take(name, self._reconcile_lease):
                continue
            try:
                if await self._reconcile(bill):
                    settled += 1
            finally:
                await leases.give_back(name, self._reconcile_lease.holder)
        return settled

    async def _reconcile(self, bill: Bill) -> bool:
        request_id = bill.vend_request_id
        if request_id is None:  # pragma: no cover - start_payment always sets it
            return False
        try:
            answer = await asyncio.wait_for(
                self._provider.requery(request_id), timeout=self._vend_timeout
            )
        except Exception as exc:
            log.warning("requery of bill %s failed: %r; will ask again", bill.id, exc)
            return False
        if answer.status is VendStatus.SUCCESS and answer.result is not None:
            await self._complete(bill, answer.result)
            return True
        if answer.status is VendStatus.FAILED:
            await bill_store.fail_payment(bill.id, answer.reason or "vend failed")
            self._on_events()
            return True
        if answer.status is VendStatus.NOT_FOUND:
            return await self._revend(bill, request_id)
        return False

    async def _revend(self, bill: Bill, request_id: str) -> bool:
        # The provider never saw this request (e.g. the daemon died before
        # sending it). Vending again under the same request id is safe: the
        # provider de-duplicates by it.
        try:
            result = await asyncio.wait_for(
                self._provider.vend(request_id, bill.meter_number, bill.amount_minor),
                timeout=self._vend_timeout,
            )
        except (VendFailed, ProviderUnavailable, MeterNotFound, InvalidMeterNumber) as exc:
            await bill_store.fail_payment(bill.id, str(exc) or type(exc).__name__)
            self._on_events()
            return True
        except Exception as exc:
            log.warning("re-vend of bill %s unresolved: %r", bill.id, exc)
            return False
        await self._complete(bill, result)
        return True
