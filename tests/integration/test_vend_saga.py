"""The pay saga when the provider misbehaves: a confirmed failure refunds; an
unknown outcome is settled by requery, never refunded or re-vended blindly."""

from __future__ import annotations

import asyncio

import pytest

from tests.client import Api, eventually
from voltpay.bridges.electricity import (
    RequeryResult,
    SimulatedProvider,
    VendOutcomeUnknown,
    VendResult,
    VendStatus,
)
from voltpay.daemon.runtime import Daemon
from voltpay.models.tables import LedgerEntry

pytestmark = pytest.mark.parametrize(
    "settings_overrides",
    [{"provider": {"vend_timeout_seconds": 0.5}, "billing": {"reconcile_interval_seconds": 0.1}}],
)


class LostRequestProvider(SimulatedProvider):
    """The first vend of a request never reaches the provider; later ones do."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.vends: list[str] = []
        self.requeries: list[str] = []

    async def vend(self, request_id: str, meter_number: str, amount_minor: int) -> VendResult:
        self.vends.append(request_id)
        if self.vends.count(request_id) == 1:
            raise VendOutcomeUnknown(request_id)
        return await super().vend(request_id, meter_number, amount_minor)

    async def requery(self, request_id: str) -> RequeryResult:
        self.requeries.append(request_id)
        return await super().requery(request_id)


class UnknownThenFailedProvider(SimulatedProvider):
    """The answer is lost; the provider later says the vend failed."""

    async def vend(self, request_id: str, meter_number: str, amount_minor: int) -> VendResult:
        raise VendOutcomeUnknown(request_id)

    async def requery(self, request_id: str) -> RequeryResult:
        return RequeryResult(VendStatus.FAILED, None, "meter rejected the token")


class PendingProvider(SimulatedProvider):
    async def vend(self, request_id: str, meter_number: str, amount_minor: int) -> VendResult:
        raise VendOutcomeUnknown(request_id)

    async def requery(self, request_id: str) -> RequeryResult:
        return RequeryResult(VendStatus.PENDING, None, None)


def _provider(cls: type[SimulatedProvider]) -> SimulatedProvider:
    return cls(
        tariff_minor_per_kwh=6800, minimum_amount_minor=1000, maximum_amount_minor=50_000_000
    )


async def _kinds(bill_id: str) -> list[str]:
    return [e.kind for e in await LedgerEntry.filter(bill_id=bill_id).order_by("created_at")]


async def _settled(api: Api, who: object, bill_id: str, status: str) -> None:
    async def check() -> bool:
        reply = await api.call("GET", f"/api/bills/{bill_id}", customer=who)  # type: ignore[arg-type]
        return bool(reply.body["status"] == status)

    await eventually(check, timeout=10)


async def test_a_lost_answer_answers_202_and_requery_finds_it_paid(
    api: Api, provider: SimulatedProvider
) -> None:
    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    provider.timeout_rate = 1.0
    reply = await api.pay(who, bill_id)
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "processing"
    assert reply.body["walletBalance"] == "0.00"
    await _settled(api, who, bill_id, "paid")
    bill = (await api.call("GET", f"/api/bills/{bill_id}", customer=who)).body
    assert bill["token"]
    assert await api.balance(who) == "0.00"
    assert await _kinds(bill_id) == ["debit"]


@pytest.mark.parametrize("provider_latency", [1.0])
async def test_a_vend_slower_than_the_timeout_is_settled_by_requery(
    api: Api, provider: SimulatedProvider, provider_latency: float
) -> None:
    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    provider.latency_seconds = provider_latency
    reply = await api.pay(who, bill_id)
    assert reply.status == 202
    await _settled(api, who, bill_id, "paid")
    assert await _kinds(bill_id) == ["debit"], "paid and never refunded"


async def test_a_request_that_never_arrived_is_vended_again_with_the_same_id(
    api: Api, daemon: Daemon
) -> None:
    provider = _provider(LostRequestProvider)
    assert isinstance(provider, LostRequestProvider)
    daemon.bills._provider = provider  # type: ignore[union-attr]
    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    assert (await api.pay(who, bill_id)).status == 202
    await _settled(api, who, bill_id, "paid")
    assert len(set(provider.vends)) == 1, "every vend carried the same request id"
    assert len(provider.vends) == 2
    assert provider.requeries, "it asked before vending again"
    assert await _kinds(bill_id) == ["debit"]


async def test_a_confirmed_failure_after_an_unknown_outcome_refunds(
    api: Api, daemon: Daemon
) -> None:
    daemon.bills._provider = _provider(UnknownThenFailedProvider)  # type: ignore[union-attr]
    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    assert (await api.pay(who, bill_id)).status == 202
    await _settled(api, who, bill_id, "failed")
    assert await api.balance(who) == "100.00"
    assert await _kinds(bill_id) == ["debit", "refund"]


async def test_an_outcome_still_pending_is_neither_refunded_nor_vended_again(
    api: Api, daemon: Daemon
) -> None:
    daemon.bills._provider = _provider(PendingProvider)  # type: ignore[union-attr]
    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    assert (await api.pay(who, bill_id)).status == 202
    await asyncio.sleep(1.0)
    bill = (await api.call("GET", f"/api/bills/{bill_id}", customer=who)).body
    assert bill["status"] == "processing"
    assert await api.balance(who) == "0.00"
    assert await _kinds(bill_id) == ["debit"]
    assert (await api.pay(who, bill_id)).status == 409
