"""Two daemons' reconcilers meet the same stuck bill: one settles it, the
other leaves it alone, and the provider is asked once. On both databases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from tortoise.transactions import in_transaction

from tests.agents.conftest import VEND_TIMEOUT_SECONDS, bills_agent
from tests.conftest import new_user
from voltpay.agents.app import create_faust_app
from voltpay.bridges.electricity import RequeryResult, SimulatedProvider
from voltpay.models import bills as bill_store
from voltpay.models import leases, money
from voltpay.models.tables import Bill, LedgerEntry


class SlowRequeryProvider(SimulatedProvider):
    """Answers a requery after a moment, and counts them."""

    def __init__(self) -> None:
        super().__init__(
            tariff_minor_per_kwh=6800, minimum_amount_minor=1000, maximum_amount_minor=10**8
        )
        self.requeries: list[str] = []

    async def requery(self, request_id: str) -> RequeryResult:
        self.requeries.append(request_id)
        await asyncio.sleep(0.2)
        return await super().requery(request_id)


async def _stuck_bill() -> Bill:
    """A bill whose debit committed and whose vend never reached the provider."""
    user_id, wallet_id = await new_user()
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        await money.path(conn).credit(conn, wallet_id, 100_00, now)
    bill, _ = await bill_store.create_bill(
        bill_store.NewBill(
            user_id=user_id,
            meter_number="A123456",
            meter_type="prepaid",
            customer_name="Ada",
            address="1 Broad Street",
            amount_minor=25_00,
            tariff_minor_per_kwh=6800,
            ttl_seconds=600,
        )
    )
    started = await bill_store.start_payment(bill.id, user_id, wallet_id)
    return started.bill


async def test_one_reconciler_settles_a_bill_that_two_daemons_see_stuck(
    instance: uuid.UUID,
) -> None:
    other = uuid.uuid4()
    await leases.register(other)
    bill = await _stuck_bill()
    provider = SlowRequeryProvider()  # one provider, as outside services are
    app = create_faust_app()
    first, second = bills_agent(app, provider, instance), bills_agent(app, provider, other)

    later = datetime.now(UTC) + timedelta(seconds=VEND_TIMEOUT_SECONDS + 1)
    settled = await asyncio.gather(first.reconcile_once(later), second.reconcile_once(later))

    assert sorted(settled) == [0, 1]
    assert provider.requeries == [bill.vend_request_id]
    paid = await Bill.get(id=bill.id)
    assert paid.status == "paid"
    assert await LedgerEntry.filter(bill_id=bill.id, kind="debit").count() == 1
    # The lease went back: a later pass may take the bill again.
    assert await leases.take(f"reconcile:{bill.id}", leases.Lease(other, 10))
