"""The SNS/SQS bridges against moto's server over HTTP (the real AWS API shape)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import AsyncExitStack
from types import SimpleNamespace
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from voltpay.bridges.aws import AwsClients, is_local_endpoint
from voltpay.bridges.direct import DirectCalls
from voltpay.bridges.moto_server import MotoServer
from voltpay.bridges.provisioning import Provisioned, provision
from voltpay.bridges.sns import (
    OutgoingEvent,
    PublishOutcome,
    SnsPublisher,
    entry_ids,
    outcomes_from_response,
)
from voltpay.bridges.sqs import ReceivedMessage, SqsConsumer
from voltpay.config.settings import AwsSettings

# Session-wide unless a conftest already provides one under the same name.

REGION = "us-east-1"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def unique_settings(**overrides: object) -> AwsSettings:
    suffix = uuid.uuid4().hex[:12]
    values: dict[str, object] = {
        "topic_name": f"events-{suffix}",
        "queue_name": f"notifications-{suffix}",
        "dead_letter_queue_name": f"notifications-dlq-{suffix}",
        "max_receive_count": 2,
        "visibility_timeout_seconds": 1,
    }
    values.update(overrides)
    return AwsSettings.model_validate(values)


def event(event_type: str = "bill_created", **fields: object) -> OutgoingEvent:
    event_id = str(uuid.uuid4())
    body = json.dumps({"eventId": event_id, "eventType": event_type, **fields})
    return OutgoingEvent(event_id=event_id, event_type=event_type, body=body)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def receive_all(
    consumer: SqsConsumer, expected: int, *, visibility_timeout: int = 30
) -> list[ReceivedMessage]:
    received: list[ReceivedMessage] = []
    for _ in range(5):
        if len(received) >= expected:
            break
        received += await consumer.receive(
            max_messages=10, wait_seconds=1, visibility_timeout=visibility_timeout
        )
    return received


async def queue_counts(clients: AwsClients, queue_url: str) -> tuple[int, int]:
    response = await clients.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


class RecordingClient:
    """Passes every call to a real client and notes the operation's name."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.operations: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.operations.append(name)
            return await attribute(*args, **kwargs)

        return call


def recording(clients: AwsClients) -> tuple[AwsClients, RecordingClient, RecordingClient]:
    """A view of the clients whose provisioning calls are noted."""
    sns, sqs = RecordingClient(clients.sns), RecordingClient(clients.sqs)
    view = AwsClients(
        stack=AsyncExitStack(),
        sns=cast(DirectCalls, SimpleNamespace(client=sns)),
        sqs=cast(DirectCalls, SimpleNamespace(client=sqs)),
        endpoint_url=clients.endpoint_url,
    )
    return view, sns, sqs


@pytest.fixture
def aws_settings() -> AwsSettings:
    return unique_settings()


@pytest.fixture
async def provisioned(aws: AwsClients, aws_settings: AwsSettings) -> Provisioned:
    return await provision(aws, aws_settings)


@pytest.fixture
def consumer(aws: AwsClients, provisioned: Provisioned) -> SqsConsumer:
    return SqsConsumer(
        aws.sqs_direct,
        provisioned.queue_url,
        dead_letter_queue_url=provisioned.dead_letter_queue_url,
    )


@pytest.fixture
def publisher(aws: AwsClients, provisioned: Provisioned) -> SnsPublisher:
    return SnsPublisher(aws.sns_direct, provisioned.topic_arn)


# --- moto's server (open: the stand-in for AWS; private behind the bus guard) ---------


def test_moto_server_serves_and_stops_without_leaving_threads() -> None:
    threads_before = set(threading.enumerate())
    endpoint = MotoServer()

    url = endpoint.start()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert endpoint.start() == url  # a second start is harmless
    with NO_PROXY.open(url + "/moto-api/config", timeout=5) as response:
        assert 200 <= response.status < 300

    endpoint.stop()

    assert not endpoint.running
    with pytest.raises(urllib.error.URLError):
        NO_PROXY.open(url + "/moto-api/config", timeout=5)
    leftover = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == []


def test_moto_server_is_ready_however_much_moto_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start-up probe must not read moto's state. Every moto server in a
    process shares that state, and dumping it (``/moto-api/data.json``, the
    old probe) took 1.7 s with 300 queues, past the probe's 1 s timeout: a
    late start in a long test run failed after 10 s of timed-out probes."""
    from moto.moto_api._internal import urls

    def dump_too_slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        raise AssertionError("the probe read moto's whole state")

    monkeypatch.setitem(urls.url_paths, "{0}/moto-api/data.json", dump_too_slowly)
    endpoint = MotoServer(ready_timeout_seconds=3.0)
    try:
        url = endpoint.start()
        assert endpoint.running and url.startswith("http://127.0.0.1:")
    finally:
        endpoint.stop()


async def test_moto_server_stops_promptly_with_a_long_poll_in_flight() -> None:
    endpoint = MotoServer()
    url = await endpoint.astart()
    try:
        async with await AwsClients.open(
            endpoint_url=url, region=REGION, access_key_id=None, secret_access_key=None
        ) as clients:
            created = await clients.sqs.create_queue(QueueName=f"idle-{uuid.uuid4().hex}")
            poll = asyncio.create_task(
                SqsConsumer(clients.sqs_direct, created["QueueUrl"]).receive(wait_seconds=20)
            )
            await asyncio.sleep(0.2)
            poll.cancel()
            with pytest.raises(asyncio.CancelledError):
                await poll
    finally:
        started = time.monotonic()
        await endpoint.astop(grace_seconds=0.5)
        elapsed = time.monotonic() - started

    assert elapsed < 1.5
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()


async def test_calls_to_moto_s_server_reuse_their_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every SNS/SQS call once opened a TCP connection of its own (moto's
    own server closes each after its answer); now the daemon's calls keep
    theirs."""
    from waitress.channel import HTTPChannel

    opened: list[object] = []
    channel_init = HTTPChannel.__init__

    def counting(self: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        opened.append(self)
        channel_init(self, *args, **kwargs)

    monkeypatch.setattr(HTTPChannel, "__init__", counting)
    endpoint = MotoServer()
    url = await endpoint.astart()
    try:
        async with await AwsClients.open(
            endpoint_url=url, region=REGION, access_key_id=None, secret_access_key=None
        ) as clients:
            created = await clients.sqs.create_queue(QueueName=f"kept-{uuid.uuid4().hex}")
            consumer = SqsConsumer(clients.sqs_direct, created["QueueUrl"])
            before = len(opened)
            for _ in range(20):
                await consumer.receive(wait_seconds=0)
                await consumer.depth()
            assert len(opened) - before <= 2
    finally:
        await endpoint.astop(grace_seconds=0.5)


# --- the clients ---------------------------------------------------------------------------


async def test_clients_are_long_lived_and_tuned_for_a_daemon(moto_server_url: str) -> None:
    clients = await AwsClients.open(
        endpoint_url=moto_server_url, region=REGION, access_key_id=None, secret_access_key=None
    )
    for client in (clients.sns, clients.sqs):
        config = client.meta.config
        assert config.read_timeout > 20  # longer than the longest long poll
        assert config.retries["mode"] == "standard"
        assert client.meta.endpoint_url == moto_server_url
        assert client.meta.region_name == REGION
    # Dummy keys were supplied: botocore would refuse to sign without any.
    assert (await clients.sqs.list_queues(MaxResults=1))["ResponseMetadata"][
        "HTTPStatusCode"
    ] == 200

    await clients.close()
    await clients.close()  # closing twice is harmless
    assert clients.closed


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:4566", True),
        ("http://localhost:4566", True),
        ("http://[::1]:4566", True),
        ("https://sqs.eu-west-1.amazonaws.com", False),
        ("http://localstack:4566", False),
        (None, False),
    ],
)
def test_local_endpoints_are_recognised(url: str | None, local: bool) -> None:
    assert is_local_endpoint(url) is local


# --- provisioning ------------------------------------------------------------------------


async def test_provision_twice_gives_the_same_resources_and_one_subscription(
    aws: AwsClients, aws_settings: AwsSettings
) -> None:
    first = await provision(aws, aws_settings)
    view, sns, _ = recording(aws)
    second = await provision(view, aws_settings)

    assert second == first
    # moto would quietly dedupe a second Subscribe; real SNS rejects one whose
    # attributes differ, so an existing subscription must be found, not re-made.
    assert "subscribe" not in sns.operations
    subscriptions = await aws.sns.list_subscriptions_by_topic(TopicArn=first.topic_arn)
    assert [s["SubscriptionArn"] for s in subscriptions["Subscriptions"]] == [
        first.subscription_arn
    ]
    assert subscriptions["Subscriptions"][0]["Endpoint"] == first.queue_arn
    subscription = await aws.sns.get_subscription_attributes(SubscriptionArn=first.subscription_arn)
    assert subscription["Attributes"]["RawMessageDelivery"] == "true"

    attributes = (
        await aws.sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["All"])
    )["Attributes"]
    assert attributes["VisibilityTimeout"] == "1"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == first.dead_letter_queue_arn
    assert int(redrive["maxReceiveCount"]) == 2
    statement = json.loads(attributes["Policy"])["Statement"][0]
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == first.queue_arn
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == first.topic_arn


async def test_provision_uses_named_resources_as_they_are(aws: AwsClients) -> None:
    suffix = uuid.uuid4().hex[:12]
    topic_arn = (await aws.sns.create_topic(Name=f"ops-topic-{suffix}"))["TopicArn"]
    queue_url = (await aws.sqs.create_queue(QueueName=f"ops-queue-{suffix}"))["QueueUrl"]
    dlq_url = (await aws.sqs.create_queue(QueueName=f"ops-dlq-{suffix}"))["QueueUrl"]
    settings = unique_settings(
        topic_arn=topic_arn, queue_url=queue_url, dead_letter_queue_url=dlq_url
    )

    view, sns, sqs = recording(aws)
    result = await provision(view, settings)

    assert not {"create_topic", "create_queue", "set_queue_attributes"} & {
        *sns.operations,
        *sqs.operations,
    }
    assert (result.topic_arn, result.queue_url, result.dead_letter_queue_url) == (
        topic_arn,
        queue_url,
        dlq_url,
    )
    assert result.queue_arn.endswith(f":ops-queue-{suffix}")
    assert result.dead_letter_queue_arn.endswith(f":ops-dlq-{suffix}")
    # Nothing was created under the configured names...
    for name in (settings.queue_name, settings.dead_letter_queue_name):
        listed = await aws.sqs.list_queues(QueueNamePrefix=name)
        assert listed.get("QueueUrls", []) == []
    topics = await aws.sns.list_topics()
    assert not [t for t in topics["Topics"] if t["TopicArn"].endswith(":" + settings.topic_name)]
    # ...and the operator's queue was not reconfigured.
    attributes = (await aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
        "Attributes"
    ]
    assert "RedrivePolicy" not in attributes
    assert "Policy" not in attributes
    subscriptions = await aws.sns.list_subscriptions_by_topic(TopicArn=topic_arn)
    assert [s["Endpoint"] for s in subscriptions["Subscriptions"]] == [result.queue_arn]


async def test_provision_turns_on_raw_delivery_of_an_existing_subscription(
    aws: AwsClients, aws_settings: AwsSettings
) -> None:
    topic_arn = (await aws.sns.create_topic(Name=aws_settings.topic_name))["TopicArn"]
    queue_url = (await aws.sqs.create_queue(QueueName=aws_settings.queue_name))["QueueUrl"]
    queue_arn = (
        await aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    )["Attributes"]["QueueArn"]
    enveloped = await aws.sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True
    )

    view, sns, _ = recording(aws)
    result = await provision(view, aws_settings)

    assert "subscribe" not in sns.operations
    assert result.subscription_arn == enveloped["SubscriptionArn"]
    subscriptions = await aws.sns.list_subscriptions_by_topic(TopicArn=topic_arn)
    assert len(subscriptions["Subscriptions"]) == 1
    attributes = await aws.sns.get_subscription_attributes(SubscriptionArn=result.subscription_arn)
    assert attributes["Attributes"]["RawMessageDelivery"] == "true"


# --- publishing and consuming ------------------------------------------------------------


async def test_published_events_arrive_raw_with_their_type(
    aws: AwsClients, publisher: SnsPublisher, consumer: SqsConsumer, provisioned: Provisioned
) -> None:
    paid = OutgoingEvent(
        event_id="evt:payment/1",
        event_type="payment_completed",
        body='{"eventId":"evt:payment/1", "token": "1234-5678", "name": "Adébáyọ̀ ₦"}',
    )
    funded = event("wallet_funded", amount="500.00")

    outcomes = await publisher.publish_batch([paid, funded])

    assert [(o.event_id, o.ok, o.retryable) for o in outcomes] == [
        (paid.event_id, True, False),
        (funded.event_id, True, False),
    ]
    assert all(o.message_id for o in outcomes)
    received = await receive_all(consumer, 2)
    by_body = {message.body: message for message in received}
    assert set(by_body) == {paid.body, funded.body}  # byte for byte: no SNS envelope
    assert by_body[paid.body].attributes["eventType"] == "payment_completed"
    assert by_body[funded.body].attributes["eventType"] == "wallet_funded"
    assert {message.receive_count for message in received} == {1}

    assert await consumer.delete_batch(received) == []
    assert await queue_counts(aws, provisioned.queue_url) == (0, 0)


async def test_a_half_failed_batch_reports_each_event(
    publisher: SnsPublisher, consumer: SqsConsumer
) -> None:
    good = event()
    oversized = OutgoingEvent("too-big", "bill_created", "x" * (256 * 1024 + 1))

    outcomes = await publisher.publish_batch([good, oversized])

    assert outcomes[0] == PublishOutcome(good.event_id, True, outcomes[0].message_id, None, False)
    assert outcomes[1].event_id == "too-big"
    assert not outcomes[1].ok
    assert not outcomes[1].retryable  # the sender's fault: it fails the same way again
    assert outcomes[1].error is not None and "too long" in outcomes[1].error
    received = await receive_all(consumer, 1)
    assert [message.body for message in received] == [good.body]
    assert await consumer.delete_batch(received) == []


def test_batch_responses_map_back_to_each_event_in_order() -> None:
    events = [
        OutgoingEvent("evt:1", "bill_created", "{}"),
        OutgoingEvent("evt/2", "bill_created", "{}"),
        OutgoingEvent("evt 3", "bill_created", "{}"),
        OutgoingEvent("evt.4", "bill_created", "{}"),
    ]
    ids = entry_ids(events)
    response = {
        "Successful": [{"Id": ids[2], "MessageId": "m-3"}],
        "Failed": [
            {"Id": ids[0], "Code": "InternalError", "Message": "try later", "SenderFault": False},
            {"Id": ids[1], "Code": "InvalidParameter", "Message": "bad", "SenderFault": True},
        ],
    }

    outcomes = outcomes_from_response(events, ids, response)

    assert outcomes == [
        PublishOutcome("evt:1", False, None, "InternalError: try later", True),
        PublishOutcome("evt/2", False, None, "InvalidParameter: bad", False),
        PublishOutcome("evt 3", True, "m-3", None, False),
        PublishOutcome("evt.4", False, None, "entry missing from PublishBatch response", True),
    ]


def test_entry_ids_are_safe_and_distinct() -> None:
    events = [
        OutgoingEvent("same:id", "t", "{}"),
        OutgoingEvent("same/id", "t", "{}"),  # sanitises to the same text
        OutgoingEvent("same_id-1", "t", "{}"),  # collides with the first suffix
        OutgoingEvent("", "t", "{}"),
        OutgoingEvent("x" * 200, "t", "{}"),
        OutgoingEvent("x" * 200 + "y", "t", "{}"),
    ]

    ids = entry_ids(events)

    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,80}", entry_id) for entry_id in ids)
    assert ids[0] == "same_id"


async def test_publish_batch_takes_at_most_ten(aws: AwsClients) -> None:
    publisher = SnsPublisher(aws.sns_direct, "arn:aws:sns:us-east-1:123456789012:unused")

    with pytest.raises(ValueError, match="at most 10"):
        await publisher.publish_batch([event() for _ in range(11)])
    assert await publisher.publish_batch([]) == []


async def test_an_unsendable_batch_is_not_retryable(publisher: SnsPublisher) -> None:
    # botocore refuses it before sending: a bug upstream, not an outage.
    malformed = OutgoingEvent("e-1", "bill_created", cast(str, 42))

    outcomes = await publisher.publish_batch([malformed])

    assert [(o.event_id, o.ok, o.retryable) for o in outcomes] == [("e-1", False, False)]


async def test_a_refused_call_makes_every_event_retryable(aws: AwsClients) -> None:
    missing_topic = f"arn:aws:sns:{REGION}:123456789012:missing-{uuid.uuid4().hex}"
    publisher = SnsPublisher(aws.sns_direct, missing_topic)
    events = [event(), event()]

    outcomes = await publisher.publish_batch(events)

    assert [(o.event_id, o.ok, o.retryable) for o in outcomes] == [
        (e.event_id, False, True) for e in events
    ]
    assert all(o.error and "NotFound" in o.error for o in outcomes)
    with pytest.raises(ClientError):
        await publisher.check()


async def test_an_unreachable_endpoint_never_raises_from_batches() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with await AwsClients.open(
        endpoint_url=url,
        region=REGION,
        access_key_id=None,
        secret_access_key=None,
        max_attempts=1,
    ) as clients:
        publisher = SnsPublisher(clients.sns_direct, f"arn:aws:sns:{REGION}:123456789012:events")
        consumer = SqsConsumer(
            clients.sqs_direct,
            f"{url}/123456789012/q",
            dead_letter_queue_url=f"{url}/123456789012/dlq",
        )
        events = [event() for _ in range(3)]
        stale = [ReceivedMessage(f"m-{i}", f"handle-{i}", "{}", 1) for i in range(12)]

        outcomes = await publisher.publish_batch(events)

        assert all(not o.ok and o.retryable and o.error for o in outcomes)
        assert [o.event_id for o in outcomes] == [e.event_id for e in events]
        assert await consumer.delete_batch(stale) == [m.message_id for m in stale]
        assert await consumer.extend_visibility(stale, 30) == [m.message_id for m in stale]
        with pytest.raises(EndpointConnectionError):
            await publisher.check()
        with pytest.raises(EndpointConnectionError):
            await consumer.check()
        with pytest.raises(EndpointConnectionError):
            await consumer.dead_letter_depth()


async def test_a_message_left_undeleted_moves_to_the_dead_letter_queue(
    aws: AwsClients, publisher: SnsPublisher, consumer: SqsConsumer, provisioned: Provisioned
) -> None:
    sent = event("payment_failed")
    assert (await publisher.publish_batch([sent]))[0].ok
    assert await consumer.dead_letter_depth() == 0

    counts = []
    for _ in range(2):  # max_receive_count deliveries, never deleted
        received = await consumer.receive(wait_seconds=1, visibility_timeout=0)
        assert [m.body for m in received] == [sent.body]
        counts.append(received[0].receive_count)
    assert counts == [1, 2]
    assert await consumer.receive(wait_seconds=0, visibility_timeout=0) == []

    assert await consumer.dead_letter_depth() == 1
    dead = SqsConsumer(aws.sqs_direct, provisioned.dead_letter_queue_url)
    dead_letters = await dead.receive(wait_seconds=0)
    assert [m.body for m in dead_letters] == [sent.body]
    assert await dead.delete_batch(dead_letters) == []
    assert await SqsConsumer(aws.sqs_direct, provisioned.queue_url).dead_letter_depth() is None


async def test_extend_visibility_and_delete_batch_in_chunks_of_ten(
    aws: AwsClients, publisher: SnsPublisher, consumer: SqsConsumer, provisioned: Provisioned
) -> None:
    events = [event(sequence=i) for i in range(12)]
    for start in (0, 10):
        assert all(o.ok for o in await publisher.publish_batch(events[start : start + 10]))
    received = await receive_all(consumer, 12, visibility_timeout=1)
    assert len(received) == 12
    kept, released = received[:6], received[6:]

    assert await consumer.extend_visibility(kept, 30) == []
    await asyncio.sleep(1.2)  # the original 1 s visibility has run out
    redelivered = await receive_all(consumer, 6)

    assert {m.message_id for m in redelivered} == {m.message_id for m in released}
    assert {m.receive_count for m in redelivered} == {2}
    assert await consumer.delete_batch([*kept, *redelivered]) == []
    assert await queue_counts(aws, provisioned.queue_url) == (0, 0)
    unknown = ReceivedMessage("gone", "not-a-receipt-handle", "{}", 1)
    assert await consumer.delete_batch([unknown]) == ["gone"]


async def test_receive_rejects_an_impossible_batch_size(consumer: SqsConsumer) -> None:
    with pytest.raises(ValueError):
        await consumer.receive(max_messages=11)


async def test_cancelling_a_long_poll_returns_promptly(consumer: SqsConsumer) -> None:
    poll = asyncio.create_task(consumer.receive(wait_seconds=20))
    await asyncio.sleep(0.2)
    assert not poll.done()

    started = time.monotonic()
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert time.monotonic() - started < 1.0

    # The client stays usable, and nothing was left open behind the poll.
    assert await consumer.receive(wait_seconds=0) == []
    gc.collect()
