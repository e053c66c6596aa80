"""A full agent mailbox answers 503 at once rather than queueing without limit."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.client import Api
from voltpay.bridges.electricity import SimulatedProvider


@pytest.mark.parametrize(
    "settings_overrides", [{"agents": {"mailbox_size": 2, "bills_concurrency": 1}}]
)
async def test_a_full_mailbox_answers_503_with_retry_after(
    api: Api, provider: SimulatedProvider
) -> None:
    who = await api.customer(funds="1000.00")
    bills = [(await api.bill(who, "10.00")).body["billId"] for _ in range(8)]
    provider.latency_seconds = 0.3
    replies = await asyncio.gather(*(api.pay(who, bill_id) for bill_id in bills))
    statuses = Counter(reply.status for reply in replies)
    assert statuses[503] >= 1, statuses
    assert statuses[200] >= 2, statuses
    assert set(statuses) == {200, 503}
    refused = [r for r in replies if r.status == 503]
    assert all(
        r.body["code"] == "overloaded" and int(r.headers["Retry-After"]) >= 1 for r in refused
    )
    assert await api.balance(who) == f"{1000 - 10 * statuses[200]:.2f}"
    provider.latency_seconds = 0
    retried = [
        await api.pay(who, r_bill)
        for r_bill, r in zip(bills, replies, strict=True)
        if r.status == 503
    ]
    assert all(r.status == 200 for r in retried)
