"""The event pipeline when its parts fail: SNS unreachable, a poison message on
the queue, Twilio answering errors. Over the real SNS/SQS API (moto's server
over HTTP) and the real twilio client against a fake Twilio server."""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.client import Api, api_for, eventually
from tests.conftest import make_settings, running_daemon
from tests.fakes.recording_sms import RecordingSmsSender
from tests.fakes.twilio_server import FakeTwilioServer
from tests.integration.conftest import delivered, outbox_event_ids, queue_depth
from voltpay.bridges.aws import AwsClients
from voltpay.bridges.electricity import SimulatedProvider
from voltpay.bridges.sns import SnsPublisher
from voltpay.daemon.runtime import Daemon
from voltpay.models.tables import AuditRecord, Notification, OutboxEvent

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "tok-5e3c7a9f1d2b4e6a8c0f"
FROM_NUMBER = "+15005550006"


@pytest.fixture
def sms_sender(sms: RecordingSmsSender) -> RecordingSmsSender:
    return sms


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def resources(daemon: Daemon) -> Any:
    assert daemon.pipeline is not None and daemon.pipeline.resources is not None
    return daemon.pipeline.resources


# -- SNS unreachable ------------------------------------------------------------------


async def test_events_wait_in_the_outbox_while_sns_is_unreachable_and_none_is_lost(
    api: Api, daemon: Daemon, sms: RecordingSmsSender
) -> None:
    assert daemon.pipeline is not None and daemon.pipeline.relay is not None
    relay = daemon.pipeline.relay
    ada = await api.customer(funds="1000.00", phone="+2348066666666")
    await eventually(lambda: delivered(2), timeout=10)
    failures_before = daemon.metrics.sample("voltpay_outbox_publish_failures_total") or 0.0

    # The relay's publisher now speaks to an SNS endpoint that refuses every
    # connection (one attempt per call, so the test does not wait on retries).
    working = relay._publisher
    dead = await AwsClients.open(
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region="us-east-1",
        access_key_id=None,
        secret_access_key=None,
        max_attempts=1,
    )
    try:
        relay._publisher = SnsPublisher(dead.sns_direct, resources(daemon).topic_arn)
        for amount in ("10.00", "20.00", "30.00"):
            bill = await api.bill(ada, amount)
            assert bill.status == 201, bill.body
            paid = await api.pay(ada, bill.body["billId"])
            assert paid.status == 200, paid.body
            assert paid.body["status"] == "paid"
        bob = await api.customer(phone="+2348077777777")

        async def waiting_after_failed_tries() -> bool:
            # 3 bills, 3 payments and bob's registration, each tried and refused.
            waiting = OutboxEvent.filter(published_at__isnull=True)
            tried = waiting.filter(attempts__gte=1, last_error__isnull=False)
            return (
                await waiting.count() == 7
                and await tried.count() == 7
                and daemon.metrics.sample("voltpay_outbox_waiting_rows") == 7
            )

        await eventually(waiting_after_failed_tries, timeout=10)
        row = await OutboxEvent.filter(published_at__isnull=True).first()
        assert row is not None and row.last_error is not None
        assert "EndpointConnectionError" in row.last_error or "connect" in row.last_error.lower()
        failures = daemon.metrics.sample("voltpay_outbox_publish_failures_total") or 0.0
        assert failures >= failures_before + 7
        assert len(sms.sent) == 2  # nothing new reached the queue
        assert await api.balance(ada) == "940.00"
    finally:
        relay._publisher = working
        await dead.close()

    relay.wake()
    await eventually(lambda: delivered(9), timeout=15)
    assert not await OutboxEvent.filter(published_at__isnull=True).exists()

    async def gauge_drained() -> bool:
        # The gauge is sampled at most once a second.
        return daemon.metrics.sample("voltpay_outbox_waiting_rows") == 0

    await eventually(gauge_drained, timeout=5)
    events = await outbox_event_ids()
    assert sms.per_event() == Counter(dict.fromkeys(events, 1))
    assert await AuditRecord.all().count() == 9
    texted_to = Counter(message.to for message in sms.sent)
    assert texted_to == Counter({ada.phone: 8, bob.phone: 1})
    reply = await api.call("GET", "/api/notifications?limit=50", customer=ada)
    assert reply.status == 200, reply.body
    kinds = Counter(item["eventType"] for item in reply.body["items"])
    assert kinds == Counter(
        {"user_registered": 1, "wallet_funded": 1, "bill_created": 3, "payment_completed": 3}
    )


# -- a poison message ---------------------------------------------------------------


@pytest.mark.parametrize(
    "settings_overrides",
    [{"aws": {"max_receive_count": 2, "visibility_timeout_seconds": 1}}],
)
async def test_a_poison_message_goes_to_the_dead_letter_queue_while_events_flow(
    api: Api, daemon: Daemon, sms: RecordingSmsSender, aws: AwsClients
) -> None:
    queues = resources(daemon)
    poison = "{this is not an event"
    await aws.sqs.send_message(QueueUrl=queues.queue_url, MessageBody=poison)

    ada = await api.customer(funds="200.00")
    bill = await api.bill(ada, "100.00")
    assert bill.status == 201, bill.body
    paid = await api.pay(ada, bill.body["billId"])
    assert paid.status == 200, paid.body
    await eventually(lambda: delivered(4), timeout=10)

    async def dead_lettered() -> bool:
        return (
            await queue_depth(aws, queues.dead_letter_queue_url) == 1
            and await queue_depth(aws, queues.queue_url) == 0
        )

    # Delivered twice, never deleted; moto moves it on the receive after that.
    await eventually(dead_lettered, timeout=15)
    response = await aws.sqs.receive_message(
        QueueUrl=queues.dead_letter_queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    assert [message["Body"] for message in response["Messages"]] == [poison]

    events = await outbox_event_ids()
    assert sms.per_event() == Counter(dict.fromkeys(events, 1))
    assert await AuditRecord.all().count() == 4
    assert await Notification.all().count() == 4
    [token_sms] = [m for m in sms.sent if "Token: " in m.body]
    assert token_sms.to == ada.phone


# -- Twilio answering errors ------------------------------------------------------------


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as server:
        yield server


@pytest.fixture
async def twilio_daemon(
    database_url: str,
    moto_server_url: str,
    provider: SimulatedProvider,
    twilio: FakeTwilioServer,
) -> AsyncIterator[Daemon]:
    """A daemon configured for Twilio: it builds the real Twilio sender itself."""
    settings = make_settings(
        database_url,
        moto_server_url,
        twilio={
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM_NUMBER,
            "base_url": twilio.base_url,
        },
    )
    async with running_daemon(settings, provider=provider) as running:
        yield running


@pytest.fixture
async def twilio_api(twilio_daemon: Daemon) -> AsyncIterator[Api]:
    assert twilio_daemon.port is not None
    async with api_for(twilio_daemon.port) as client:
        yield client


async def test_twilio_answering_500_then_201_texts_exactly_once(
    twilio: FakeTwilioServer, twilio_daemon: Daemon, twilio_api: Api, aws: AwsClients
) -> None:
    twilio.script([500, 201])
    ada = await twilio_api.customer(phone="+2348044444444")

    async def settled() -> bool:
        return (
            await Notification.filter(status="sent").exists()
            and await queue_depth(aws, resources(twilio_daemon).queue_url) == 0
        )

    await eventually(settled, timeout=15)
    assert [request.answered_status for request in twilio.requests] == [500, 201]
    assert twilio.created_count == 1
    [message] = twilio.messages
    [notification] = await Notification.all()
    assert notification.status == "sent"
    assert notification.sender == "twilio"
    assert notification.provider_message_id == message["sid"]
    assert (message["to"], message["from"]) == (ada.phone, FROM_NUMBER)
    assert message["body"] == notification.body
    assert notification.body.startswith("Welcome to voltpay!")
    sent = twilio_daemon.metrics.sample("voltpay_sms_sent_total", {"sender": "twilio"})
    assert sent == 1

    reply = await twilio_api.call("GET", "/api/notifications", customer=ada)
    assert reply.status == 200, reply.body
    [item] = reply.body["items"]
    assert (item["status"], item["eventId"]) == ("sent", str(notification.event_id))
    assert item["sentAt"] is not None


async def test_twilio_refusing_with_400_marks_the_sms_failed_and_drops_the_message(
    twilio: FakeTwilioServer, twilio_daemon: Daemon, twilio_api: Api, aws: AwsClients
) -> None:
    twilio.script([400])
    ada = await twilio_api.customer(phone="+2348055555555")

    async def settled() -> bool:
        return (
            await Notification.filter(status="failed").exists()
            and await queue_depth(aws, resources(twilio_daemon).queue_url) == 0
        )

    # Deleted from the queue once refused for good: never redelivered.
    await eventually(settled, timeout=15)
    assert [request.answered_status for request in twilio.requests] == [400]
    assert twilio.created_count == 0
    [notification] = await Notification.all()
    assert notification.status == "failed"
    assert notification.sender == "twilio"
    assert notification.sent_at is None
    assert notification.claimed_until is None
    assert notification.error is not None and "400" in notification.error
    assert await AuditRecord.filter(event_id=notification.event_id).count() == 1
    failed = twilio_daemon.metrics.sample("voltpay_sms_failed_total", {"sender": "twilio"})
    assert failed == 1

    reply = await twilio_api.call("GET", "/api/notifications", customer=ada)
    assert reply.status == 200, reply.body
    [item] = reply.body["items"]
    assert (item["status"], item["sentAt"]) == ("failed", None)
    assert item["eventId"] == str(notification.event_id)
    assert uuid.UUID(item["notificationId"]) == notification.id


# -- a consumer that fails while it holds the lease ------------------------------------


class FailsFirstSend(RecordingSmsSender):
    """Its first send fails as a crash would: not an SMS error, so the
    notification stays claimed and the message is left to come back."""

    async def send(self, message: Any) -> Any:
        if not self.sent:
            self.sent.append(message)
            raise RuntimeError("the process died here")
        return await super().send(message)


async def test_a_lease_left_by_a_failed_consumer_delays_the_sms_but_never_loses_it(
    database_url: str,
    moto_server_url: str,
    provider: SimulatedProvider,
    aws: AwsClients,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message comes back (every 2 s here) while the notification is still
    leased (8 s). Looking again every few seconds used up the message's
    receives (3 here) before the lease ended: SQS dead-lettered it and the
    SMS was never sent. It is now hidden until the lease is over."""
    import voltpay.daemon.pipeline as pipeline

    monkeypatch.setattr(pipeline, "NOTIFY_LEASE_SECONDS", 8)
    sms = FailsFirstSend()
    settings = make_settings(
        database_url,
        moto_server_url,
        aws={"visibility_timeout_seconds": 2, "max_receive_count": 3},
    )
    async with running_daemon(settings, provider=provider, sms_sender=sms) as daemon:
        assert daemon.port is not None
        async with api_for(daemon.port) as api:
            ada = await api.customer(phone="+2348066666666")
        queues = resources(daemon)

        async def settled() -> bool:
            return (
                await Notification.filter(status="sent").exists()
                and await queue_depth(aws, queues.queue_url) == 0
            )

        await eventually(settled, timeout=30)
        assert await queue_depth(aws, queues.dead_letter_queue_url) == 0
        [failed, delivered_sms] = sms.sent
        assert failed.idempotency_key == delivered_sms.idempotency_key
        assert delivered_sms.to == ada.phone
        [notification] = await Notification.all()
        assert notification.status == "sent"
