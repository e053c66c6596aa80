"""The event pipeline over the real SNS/SQS API (moto's server over HTTP):
outbox → relay → SNS → SQS → poller → notifications (one SMS each) and audit,
and the outbox relay's batching and claiming on the real database."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from tests.client import Api, Customer, eventually
from tests.fakes.clock import Clock
from tests.fakes.recording_sms import RecordingSmsSender
from tests.integration.conftest import delivered, outbox_event_ids, queue_depth
from tests.integration.test_operators import credit, operator
from voltpay.agents.outbox import OutboxRelay
from voltpay.agents.pacing import Pacer
from voltpay.agents.poller import SqsPoller
from voltpay.bridges.aws import AwsClients
from voltpay.bridges.electricity import SimulatedProvider
from voltpay.bridges.sns import OutgoingEvent, PublishOutcome
from voltpay.daemon.runtime import Daemon
from voltpay.domain.event_signing import Keyring, SigningKey
from voltpay.domain.events import UserRegistered, rfc3339
from voltpay.models import leases
from voltpay.models import outbox as outbox_store
from voltpay.models.leases import Lease
from voltpay.models.outbox import record_event
from voltpay.models.tables import AuditRecord, InboxEvent, Notification, OutboxEvent
from voltpay.observability.metrics import Metrics

TOKEN = re.compile(r"Token: (\d{4}(?:-\d{4}){4}) \((\d+\.\d{2}) kWh\)")
DUPLICATES = "voltpay_sqs_duplicates_skipped_total"
KEYRING = Keyring(SigningKey.of(b"a test's own key, 32 bytes long."))


@pytest.fixture
def sms_sender(sms: RecordingSmsSender) -> RecordingSmsSender:
    return sms


async def notifications_of(api: Api, who: Customer) -> list[dict[str, Any]]:
    reply = await api.call("GET", "/api/notifications?limit=50", customer=who)
    assert reply.status == 200, reply.body
    assert reply.body["nextCursor"] is None
    items: list[dict[str, Any]] = reply.body["items"]
    return items


def envelope(type_: str, data: dict[str, Any]) -> tuple[str, str]:
    """A fresh event of ours, as its SNS message body."""
    event_id = str(uuid.uuid4())
    body = {
        "eventId": event_id,
        "type": type_,
        "version": 1,
        "occurredAt": rfc3339(datetime.now(UTC)),
        "data": data,
    }
    return event_id, json.dumps(body, separators=(",", ":"))


def signed(daemon: Daemon, body: str) -> dict[str, Any]:
    """The message attributes that make ``body`` an event of the daemon's."""
    signature = daemon.pipeline.keyring.sign(body.encode())
    return {"signature": {"DataType": "String", "StringValue": signature}}


def duplicates_skipped(daemon: Daemon) -> float:
    return daemon.metrics.sample(DUPLICATES) or 0.0


# -- every event type, end to end --------------------------------------------------


async def test_each_event_type_texts_its_owner_once_and_is_audited_once(
    api: Api, daemon: Daemon, provider: SimulatedProvider, sms: RecordingSmsSender
) -> None:
    alice = await api.customer(funds="500.00", phone="+2348011111111")
    bob = await api.customer(phone="+2348022222222")
    bill = await api.bill(alice, "100.00", meter="45012345678")
    assert bill.status == 201, bill.body
    paid = await api.pay(alice, bill.body["billId"])
    assert paid.status == 200, paid.body
    doomed = await api.bill(alice, "50.00", meter="A123456")
    assert doomed.status == 201, doomed.body
    provider.failure_rate = 1.0
    failed = await api.pay(alice, doomed.body["billId"])
    assert failed.status == 502, failed.body
    assert failed.body["code"] == "vend_failed"

    # alice: registered, funded, two bills, one paid, one failed; bob: registered.
    await eventually(lambda: delivered(7), timeout=20)

    events = await outbox_event_ids()
    assert await OutboxEvent.filter(published_at__isnull=True).count() == 0
    # Exactly one SMS per event, to the owner's phone, and nothing else.
    assert sms.per_event() == Counter(dict.fromkeys(events, 1))
    # Exactly one audit row per event, holding the event as it was published.
    audit_rows = await AuditRecord.all()
    assert len(audit_rows) == 7
    assert {str(row.event_id) for row in audit_rows} == events
    for row in audit_rows:
        recorded = json.loads(row.body)
        assert recorded["eventId"] == str(row.event_id)
        assert recorded["type"] == row.event_type
    assert await Notification.all().count() == 7
    assert await InboxEvent.all().count() == 7

    mine = await notifications_of(api, alice)
    theirs = await notifications_of(api, bob)
    assert len(mine) == 6
    assert len(theirs) == 1
    assert {item["eventId"] for item in mine}.isdisjoint(item["eventId"] for item in theirs)
    assert {item["eventId"] for item in mine} | {theirs[0]["eventId"]} == events
    for item, phone in [*((m, alice.phone) for m in mine), (theirs[0], bob.phone)]:
        assert item["to"] == phone
        assert item["status"] == "sent"
        assert item["sentAt"] is not None
        [texted] = sms.sent_for(item["eventId"])
        assert (texted.to, texted.body) == (phone, item["body"])

    assert theirs[0]["eventType"] == "user_registered"
    assert theirs[0]["body"].startswith("Welcome to voltpay!")

    bodies: dict[str, list[str]] = defaultdict(list)
    for item in mine:
        bodies[item["eventType"]].append(item["body"])
    assert sorted(bodies) == [
        "bill_created",
        "payment_completed",
        "payment_failed",
        "user_registered",
        "wallet_funded",
    ]
    assert len(bodies["bill_created"]) == 2
    [welcome] = bodies["user_registered"]
    assert welcome.startswith("Welcome to voltpay!")
    [funded] = bodies["wallet_funded"]
    assert "credited with NGN 500.00." in funded
    assert "New balance: NGN 500.00." in funded
    created = sorted(bodies["bill_created"], key=lambda text: "45012345678" not in text)
    assert "bill of NGN 100.00 created for meter 45012345678" in created[0]
    assert f"({bill.body['customerName']})" in created[0]
    assert "bill of NGN 50.00 created for meter A123456" in created[1]
    assert f"({doomed.body['customerName']})" in created[1]
    [completed] = bodies["payment_completed"]
    assert "payment of NGN 100.00 for meter 45012345678 succeeded." in completed
    match = TOKEN.search(completed)
    assert match is not None, completed
    token, units = match.groups()
    assert token.replace("-", "") == paid.body["token"].replace("-", "")
    # NGN 100.00 at NGN 68.00 per kWh, rounded down.
    assert units == paid.body["units"] == "1.47"
    assert f"Receipt {paid.body['receiptNumber']}." in completed
    [refunded] = bodies["payment_failed"]
    assert "payment of NGN 50.00 for meter A123456 failed." in refunded
    assert "NGN 50.00 was refunded to your wallet." in refunded
    assert "Balance: NGN 400.00." in refunded
    assert await api.balance(alice) == "400.00"


async def test_a_reversed_credit_is_texted_to_the_wallet_s_owner_once(
    api: Api, daemon: Daemon, sms: RecordingSmsSender
) -> None:
    desk = await operator(api)
    customer = await api.customer(phone="+2348033333333")
    made = await credit(api, desk, customer.wallet_id, "80.00", "dep-sms", "cash at desk 2")
    assert made.status == 201, made.body
    spent = await api.bill(customer, "30.00")
    assert (await api.pay(customer, spent.body["billId"])).status == 200
    reversal = await api.call(
        "POST",
        f"/api/admin/credits/{made.body['creditId']}/reversal",
        json={"reason": "the transfer bounced"},
        headers={"Idempotency-Key": "rev-sms"},
        customer=desk,
    )
    assert reversal.status == 402  # spent: nothing taken back, nothing told
    topped = await api.call(
        "POST",
        f"/api/admin/wallets/{customer.wallet_id}/credits",
        json={"amount": "50.00", "reason": "goodwill"},
        headers={"Idempotency-Key": "dep-sms-2"},
        customer=desk,
    )
    assert topped.status == 201, topped.body
    reversal = await api.call(
        "POST",
        f"/api/admin/credits/{made.body['creditId']}/reversal",
        json={"reason": "the transfer bounced"},
        headers={"Idempotency-Key": "rev-sms-2"},
        customer=desk,
    )
    assert reversal.status == 201, reversal.body

    # The customer's welcome, two credits, a bill, its payment, the reversal;
    # the operator's welcome.
    await eventually(lambda: delivered(7), timeout=20)
    events = await outbox_event_ids()
    assert sms.per_event() == Counter(dict.fromkeys(events, 1))
    mine = await notifications_of(api, customer)
    [reversed_] = [item["body"] for item in mine if item["eventType"] == "credit_reversed"]
    assert reversed_.startswith(
        "voltpay: a credit of NGN 80.00 to your wallet was reversed. New balance: NGN 20.00."
    )
    assert "bounced" not in reversed_  # the operator's reason stays in the audit trail
    assert await AuditRecord.filter(event_type="credit_reversed").count() == 1
    assert await api.balance(customer) == "20.00"


# -- at-least-once delivery, exactly-once SMS -----------------------------------------


async def test_an_event_delivered_three_times_texts_once(
    api: Api, daemon: Daemon, sms: RecordingSmsSender, aws: AwsClients
) -> None:
    assert daemon.pipeline is not None and daemon.pipeline.resources is not None
    topic_arn = daemon.pipeline.resources.topic_arn
    queue_url = daemon.pipeline.resources.queue_url
    ada = await api.customer(phone="+2348033333333")

    async def quiet() -> bool:
        return await delivered(1) and await queue_depth(aws, queue_url) == 0

    await eventually(quiet, timeout=10)

    # One after the other through SNS: the first delivery texts, the two
    # that follow find the event handled and are deleted unsent.
    funded_id, funded = envelope(
        "wallet_funded",
        {
            "userId": ada.user_id,
            "walletId": ada.wallet_id,
            "transactionId": str(uuid.uuid4()),
            "amount": "25.00",
            "balance": "25.00",
            "source": "sandbox",
        },
    )
    baseline = duplicates_skipped(daemon)
    await aws.sns.publish(
        TopicArn=topic_arn, Message=funded, MessageAttributes=signed(daemon, funded)
    )
    await eventually(lambda: Notification.filter(event_id=funded_id, status="sent").exists())
    response = await aws.sns.publish_batch(
        TopicArn=topic_arn,
        PublishBatchRequestEntries=[
            {"Id": "again", "Message": funded, "MessageAttributes": signed(daemon, funded)},
            {"Id": "and-again", "Message": funded, "MessageAttributes": signed(daemon, funded)},
        ],
    )
    assert len(response["Successful"]) == 2, response

    async def duplicates_handled() -> bool:
        return await queue_depth(aws, queue_url) == 0 and duplicates_skipped(daemon) == baseline + 2

    await eventually(duplicates_handled, timeout=10)
    assert len(sms.sent_for(funded_id)) == 1

    # Three copies in one SendMessageBatch: taken together and handled side
    # by side, with each send held long enough for the copies to overlap.
    sms.delay_seconds = 0.3
    billed_id, billed = envelope(
        "bill_created",
        {
            "userId": ada.user_id,
            "billId": str(uuid.uuid4()),
            "meterNumber": "A654321",
            "customerName": "Ada Test",
            "amount": "70.00",
            "expiresAt": rfc3339(datetime.now(UTC) + timedelta(minutes=30)),
        },
    )
    baseline = duplicates_skipped(daemon)
    received = daemon.metrics.sample("voltpay_sqs_received_total") or 0.0
    response = await aws.sqs.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": str(copy), "MessageBody": billed, "MessageAttributes": signed(daemon, billed)}
            for copy in range(3)
        ],
    )
    assert len(response["Successful"]) == 3, response

    async def copies_handled() -> bool:
        return (
            await queue_depth(aws, queue_url) == 0
            and await Notification.filter(event_id=billed_id, status="sent").exists()
        )

    # A copy that finds the send in progress is put back for a few seconds.
    await eventually(copies_handled, timeout=20)
    assert len(sms.sent_for(billed_id)) == 1
    assert duplicates_skipped(daemon) >= baseline + 1
    assert (daemon.metrics.sample("voltpay_sqs_received_total") or 0.0) >= received + 3

    for event_id, body in ((funded_id, funded), (billed_id, billed)):
        [notification] = await Notification.filter(event_id=event_id)
        assert notification.status == "sent"
        assert notification.user_id == uuid.UUID(ada.user_id)
        assert notification.provider_message_id is not None
        [audited] = await AuditRecord.filter(event_id=event_id)
        assert json.loads(audited.body) == json.loads(body)
        assert await InboxEvent.filter(event_id=event_id).count() == 1
        [texted] = sms.sent_for(event_id)
        assert texted.to == ada.phone
    assert "credited with NGN 25.00" in sms.sent_for(funded_id)[0].body
    assert "bill of NGN 70.00 created for meter A654321" in sms.sent_for(billed_id)[0].body
    assert sum(sms.per_event().values()) == 3  # the welcome and one for each event
    assert {item["eventId"] for item in await notifications_of(api, ada)} >= {
        funded_id,
        billed_id,
    }


# -- the outbox relay against the real database ---------------------------------------


class FakePublisher:
    """Stands in for SnsPublisher: records each PublishBatch call and answers
    per event as told (refused, or left out of the response altogether)."""

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.refuse: set[str] = set()
        self.drop: set[str] = set()
        self.batches: list[list[OutgoingEvent]] = []
        self.published: list[str] = []

    async def publish_batch(self, events: Sequence[OutgoingEvent]) -> list[PublishOutcome]:
        self.batches.append(list(events))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        outcomes = []
        for event in events:
            if event.event_id in self.drop:
                continue
            if event.event_id in self.refuse:
                outcomes.append(
                    PublishOutcome(event.event_id, False, None, "InternalError: simulated", True)
                )
            else:
                self.published.append(event.event_id)
                outcomes.append(
                    PublishOutcome(event.event_id, True, f"m-{event.event_id}", None, False)
                )
        return outcomes


def relay_with(
    publisher: FakePublisher,
    holder: uuid.UUID,
    *,
    metrics: Metrics | None = None,
    batch_size: int = 10,
    parallel_batches: int = 4,
    max_backoff_seconds: float = 60.0,
    pacer: Pacer | None = None,
) -> OutboxRelay:
    return OutboxRelay(
        publisher,  # type: ignore[arg-type]
        keyring=KEYRING,
        lease=Lease(holder, 60.0),
        metrics=metrics or Metrics(process_metrics=False),
        interval_seconds=60.0,
        batch_size=batch_size,
        max_backoff_seconds=max_backoff_seconds,
        parallel_batches=parallel_batches,
        pacer=pacer,
    )


async def add_outbox_rows(count: int) -> list[str]:
    event_ids = []
    async with in_transaction() as conn:
        for number in range(count):
            registered = UserRegistered(
                user_id=uuid.uuid4(), username=f"user{number}", wallet_id=uuid.uuid4()
            )
            event = await record_event(conn, registered, datetime.now(UTC))
            event_ids.append(str(event.event_id))
    return event_ids


async def test_the_relay_signs_and_publishes_in_batches_of_at_most_ten(instance: uuid.UUID) -> None:
    event_ids = await add_outbox_rows(25)
    publisher = FakePublisher()
    metrics = Metrics(process_metrics=False)
    relay = relay_with(publisher, instance, metrics=metrics)

    assert await relay.flush() == 25

    sizes = [len(batch) for batch in publisher.batches]
    assert len(sizes) >= 3
    assert max(sizes) <= 10
    assert sum(sizes) == 25
    assert sorted(publisher.published) == sorted(event_ids)
    rows = {str(row.event_id): row for row in await OutboxEvent.all()}
    for batch in publisher.batches:
        for event in batch:
            row = rows[event.event_id]
            assert (event.event_type, event.body) == (row.event_type, row.body)
            KEYRING.verify(row.body.encode(), event.signature)  # each event signed, as it is
    assert all(row.published_at is not None for row in rows.values())
    assert all(row.claimed_until is None and row.attempts == 0 for row in rows.values())
    assert metrics.sample("voltpay_outbox_published_total") == 25
    assert metrics.sample("voltpay_outbox_waiting_rows") == 0

    # Nothing is due any more: no call at all.
    assert await relay.flush() == 0
    assert len(publisher.batches) == len(sizes)


async def test_a_half_failed_batch_keeps_the_failed_rows_for_a_later_retry(
    instance: uuid.UUID,
) -> None:
    event_ids = await add_outbox_rows(10)
    publisher = FakePublisher()
    publisher.refuse = set(event_ids[1:6:2])  # refused by SNS
    publisher.drop = set(event_ids[6:8])  # missing from the response
    failed = publisher.refuse | publisher.drop
    metrics = Metrics(process_metrics=False)
    relay = relay_with(publisher, instance, metrics=metrics, max_backoff_seconds=0.3)

    assert await relay.flush() == 5
    checked_at = datetime.now(UTC)

    assert [len(batch) for batch in publisher.batches] == [10]
    rows = {str(row.event_id): row for row in await OutboxEvent.all()}
    for event_id, row in rows.items():
        assert row.claimed_until is None
        if event_id in failed:
            assert row.published_at is None
            assert row.attempts == 1
            assert row.next_attempt_at > checked_at
            expected = "simulated" if event_id in publisher.refuse else "no result"
            assert row.last_error is not None and expected in row.last_error
        else:
            assert row.published_at is not None
            assert row.attempts == 0
            assert row.last_error is None
    assert metrics.sample("voltpay_outbox_publish_failures_total") == 5
    assert metrics.sample("voltpay_outbox_waiting_rows") == 5

    # Not due yet: waiting out the backoff, not hammering SNS.
    assert await relay.flush() == 0
    assert len(publisher.batches) == 1

    publisher.refuse.clear()
    publisher.drop.clear()

    async def all_published() -> bool:
        await relay.flush()
        return not await OutboxEvent.filter(published_at__isnull=True).exists()

    await eventually(all_published, timeout=5)
    assert sorted(publisher.published) == sorted(event_ids)
    # Each row's backoff has its own jitter, so the retries may come in several calls.
    assert sum(len(batch) for batch in publisher.batches[1:]) == 5
    retried = await OutboxEvent.filter(event_id__in=sorted(failed))
    assert all(row.attempts == 1 and row.published_at is not None for row in retried)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_relays_flushing_at_once_never_publish_an_event_twice(
    instance: uuid.UUID,
) -> None:
    another = uuid.uuid4()  # a second daemon, live too
    await leases.register(another)

    # Two pooled connections open before the race: otherwise the second relay's
    # first claim waits for a new connection and never overlaps the first's.
    async def hold_a_connection() -> None:
        async with in_transaction() as conn:
            await conn.execute_query("SELECT pg_sleep(0.05)")

    await asyncio.gather(hold_a_connection(), hold_a_connection())
    event_ids = await add_outbox_rows(30)
    # Small claims and a slow SNS keep both relays claiming while the other publishes.
    first, second = FakePublisher(delay_seconds=0.02), FakePublisher(delay_seconds=0.02)
    relays = [
        relay_with(publisher, instance, batch_size=3, parallel_batches=2)
        for publisher in (first, second)
    ]

    counts = await asyncio.gather(*(relay.flush() for relay in relays))

    assert len(first.published) == len(set(first.published))
    assert len(second.published) == len(set(second.published))
    assert set(first.published).isdisjoint(second.published)
    assert sorted(first.published + second.published) == sorted(event_ids)
    assert counts == [len(first.published), len(second.published)]
    assert first.published and second.published, "both relays should have had a share"
    assert not await OutboxEvent.filter(published_at__isnull=True).exists()


async def test_a_paced_relay_publishes_only_what_the_pace_allows(instance: uuid.UUID) -> None:
    event_ids = await add_outbox_rows(45)
    clock = Clock()
    pacer = Pacer(factor=1.0, floor_per_second=10, clock=clock)
    for _ in range(200):  # 100 commits a second for the last two seconds
        pacer.arrived()
        clock.now += 0.01
    pacer.spend(pacer.allowance(1000))
    publisher = FakePublisher()
    relay = relay_with(publisher, instance, pacer=pacer)

    # Nothing saved up: the paced pass publishes nothing (and sets itself a
    # timer for the next batch).
    assert await relay.flush(paced=True) == 0
    assert publisher.batches == []
    await relay.stop()  # cancels that timer

    clock.now += 0.15  # about 16 events' worth at 110 a second: one whole batch
    assert await relay.flush(paced=True) == 10
    assert [len(batch) for batch in publisher.batches] == [10]

    # Unpaced (the final flush at shutdown), everything due goes.
    assert await relay.flush() == 35
    assert sorted(publisher.published) == sorted(event_ids)


async def test_claims_take_the_earliest_due_rows_and_the_backlog_gauge_reads_them(
    instance: uuid.UUID,
) -> None:
    published = await add_outbox_rows(3)
    await OutboxEvent.filter(event_id__in=published).update(published_at=datetime.now(UTC))
    waiting = await add_outbox_rows(4)
    rows = {str(row.event_id): row for row in await OutboxEvent.all()}
    # The newest row is due first: claims follow next_attempt_at, not id.
    first_due = rows[waiting[-1]]
    oldest = min(rows[event_id].created_at for event_id in waiting)
    await OutboxEvent.filter(id=first_due.id).update(
        next_attempt_at=oldest.replace(year=oldest.year - 1)
    )
    count, oldest_seen = await outbox_store.backlog()
    assert count == 4
    assert oldest_seen is not None and oldest_seen.tzinfo is not None
    assert abs((oldest_seen - oldest).total_seconds()) < 0.001

    claimed = await outbox_store.claim_due(1, Lease(instance, 60))
    assert [str(row.event_id) for row in claimed] == [waiting[-1]]
    claimed = await outbox_store.claim_due(10, Lease(instance, 60))
    assert [str(row.event_id) for row in claimed] == waiting[:-1]  # in id order within a claim
    assert await outbox_store.claim_due(10, Lease(instance, 60)) == []  # claimed rows are leased

    await OutboxEvent.all().update(published_at=datetime.now(UTC))
    assert await outbox_store.backlog() == (0, None)


class CountingConsumer:
    """Stands in for SqsConsumer: counts receives, each answering at once
    with no messages."""

    def __init__(self) -> None:
        self.receives = 0

    async def receive(self, count: int, wait: int, visibility: int) -> list[Any]:
        self.receives += 1
        await asyncio.sleep(0.001)
        return []

    async def dead_letter_depth(self) -> int | None:
        return None


async def receives_in(pacer: Pacer | None, seconds: float) -> int:
    consumer = CountingConsumer()
    poller = SqsPoller(
        consumer,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # no message ever reaches the agents
        None,  # type: ignore[arg-type]
        keyring=KEYRING,
        max_event_age=timedelta(days=14),
        metrics=Metrics(process_metrics=False),
        max_in_flight=10,
        wait_seconds=0,
        visibility_timeout_seconds=30,
        pacer=pacer,
    )
    poller.start()
    await asyncio.sleep(seconds)
    await poller.drain()
    return consumer.receives


async def test_a_paced_poller_waits_for_the_pace_before_each_receive() -> None:
    idle = Pacer(factor=1.25, floor_per_second=10)  # nothing arriving: no limit
    unpaced = await receives_in(idle, 0.3)

    busy = Pacer(factor=1.0, floor_per_second=1)
    busy.arrived(40)  # 20 events a second over the window: 10 more every 0.5 s
    paced = await receives_in(busy, 0.3)

    assert unpaced >= 20  # an empty receive each millisecond or so
    # An empty receive spends nothing, so one wait for the first batch of
    # tokens (about 0.5 s) is all it takes: none within the 0.3 s.
    assert paced == 0
