"""Daemons that provision at once end with one subscription of the queue to
the topic, even on an endpoint that lets overlapping Subscribes each insert one
(moto's threaded server checks and inserts without a lock)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from voltpay.bridges.provisioning import _ensure_subscription

TOPIC = "arn:aws:sns:us-east-1:123456789012:events"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:notifications"


class RacingSns:
    """An SNS whose Subscribe never finds an existing subscription: each call
    inserts one, as two overlapping calls can on a server without a lock.
    ``hold`` makes every Subscribe wait until that many have arrived, so that
    all of them find none first and all insert."""

    def __init__(self, *, hold: int = 1) -> None:
        self.subscriptions: dict[str, dict[str, str]] = {}
        self.unsubscribed: list[str] = []
        self._numbers = itertools.count(1)
        self._hold = hold
        self._arrived = 0
        self._all_arrived = asyncio.Event()

    def add(self, number: int, *, endpoint: str = QUEUE, raw: str = "true") -> str:
        # Numbers in the ARN not in creation order: the one kept is the lowest ARN.
        arn = f"{TOPIC}:{number:04d}"
        self.subscriptions[arn] = {
            "SubscriptionArn": arn,
            "Protocol": "sqs",
            "Endpoint": endpoint,
            "RawMessageDelivery": raw,
        }
        return arn

    async def list_subscriptions_by_topic(
        self, TopicArn: str, NextToken: str | None = None
    ) -> dict[str, Any]:
        assert TopicArn == TOPIC
        await asyncio.sleep(0)
        rows = list(self.subscriptions.values())
        start = int(NextToken or 0)  # one a page, to walk the pages
        page: dict[str, Any] = {"Subscriptions": rows[start : start + 1]}
        if start + 1 < len(rows):
            page["NextToken"] = str(start + 1)
        return page

    async def subscribe(self, **request: Any) -> dict[str, str]:
        assert request["Attributes"] == {"RawMessageDelivery": "true"}
        self._arrived += 1
        if self._arrived >= self._hold:
            self._all_arrived.set()
        await self._all_arrived.wait()
        return {"SubscriptionArn": self.add(1000 - next(self._numbers))}

    async def unsubscribe(self, SubscriptionArn: str) -> None:
        self.unsubscribed.append(SubscriptionArn)
        self.subscriptions.pop(SubscriptionArn, None)

    async def set_subscription_attributes(
        self, SubscriptionArn: str, AttributeName: str, AttributeValue: str
    ) -> None:
        self.subscriptions[SubscriptionArn][AttributeName] = AttributeValue


def ours(sns: RacingSns) -> list[str]:
    return sorted(a for a, s in sns.subscriptions.items() if s["Endpoint"] == QUEUE)


async def test_daemons_that_all_subscribe_at_once_keep_one_subscription() -> None:
    sns = RacingSns(hold=3)
    await asyncio.gather(*(_ensure_subscription(sns, TOPIC, QUEUE) for _ in range(3)))
    made = {f"{TOPIC}:{n:04d}" for n in (999, 998, 997)}
    assert ours(sns) == [min(made)]
    assert set(sns.unsubscribed) == made - {min(made)}


async def test_a_daemon_that_subscribes_later_removes_the_higher_duplicate() -> None:
    sns = RacingSns()
    first = await _ensure_subscription(sns, TOPIC, QUEUE)
    # A second insert that raced the first (it found none before the first landed).
    racer = sns.add(5000)
    second = await _ensure_subscription(sns, TOPIC, QUEUE)
    assert ours(sns) == [first] == [second]
    assert sns.unsubscribed == [racer]


async def test_the_lowest_subscription_is_never_removed() -> None:
    sns = RacingSns()
    lowest = sns.add(1)
    sns.add(2, raw="false")
    kept = await _ensure_subscription(sns, TOPIC, QUEUE)
    assert kept == lowest
    assert ours(sns) == [lowest]
    assert sns.subscriptions[lowest]["RawMessageDelivery"] == "true"


async def test_another_queues_subscription_is_left_alone() -> None:
    sns = RacingSns()
    other = sns.add(1, endpoint=QUEUE + "-other")
    kept = await _ensure_subscription(sns, TOPIC, QUEUE)
    assert kept != other and other in sns.subscriptions
    assert ours(sns) == [kept]
    assert sns.unsubscribed == []
