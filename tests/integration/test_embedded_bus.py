"""The embedded bus: a child process that serves the daemon's signed SNS and
SQS calls and nothing else, ends with the daemon however it ends, and keeps
no message it has deleted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from voltpay.bridges.aws import AwsClients
from voltpay.bridges.embedded import BusAccess, EmbeddedBus
from voltpay.bridges.provisioning import Provisioned, provision
from voltpay.bridges.sns import OutgoingEvent, SnsPublisher
from voltpay.bridges.sqs import SqsConsumer
from voltpay.config.settings import AwsSettings

ROOT = Path(__file__).resolve().parents[2]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
async def bus() -> AsyncIterator[tuple[EmbeddedBus, BusAccess]]:
    embedded = EmbeddedBus(region="us-east-1")
    access = await embedded.astart()
    try:
        yield embedded, access
    finally:
        await embedded.astop()


async def test_the_daemons_own_calls_go_through(bus: tuple[EmbeddedBus, BusAccess]) -> None:
    _, access = bus
    settings = AwsSettings()
    async with await AwsClients.from_settings(settings, embedded=access) as clients:
        resources: Provisioned = await provision(clients, settings)
        publisher = SnsPublisher(clients.sns_direct, resources.topic_arn)
        event_id = str(uuid.uuid4())
        outcomes = await publisher.publish_batch(
            [OutgoingEvent(event_id=event_id, event_type="wallet_funded", body='{"x": 1}')]
        )
        assert [outcome.ok for outcome in outcomes] == [True]
        consumer = SqsConsumer(clients.sqs_direct, resources.queue_url)
        received = await consumer.receive(wait_seconds=5)
        assert [message.body for message in received] == ['{"x": 1}']
        await consumer.delete_batch(received)
        assert await consumer.depth() == 0


async def test_nobody_else_reaches_moto(bus: tuple[EmbeddedBus, BusAccess]) -> None:
    _, access = bus
    for method, path in [
        ("GET", "/moto-api/data.json"),
        ("POST", "/moto-api/reset"),
        ("GET", "/moto-api/config"),
        ("GET", "/?Action=ListQueues"),
        ("POST", "/"),
    ]:
        request = urllib.request.Request(
            access.url + path, method=method, data=b"" if method == "POST" else None
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            NO_PROXY.open(request, timeout=5)
        assert refused.value.code == 403, (method, path)

    # The same clients, correctly signed, with a key pair of their own.
    async with await AwsClients.open(
        endpoint_url=access.url,
        region="us-east-1",
        access_key_id="AKIAOTHERKEY",
        secret_access_key="another-secret",
    ) as strangers:
        with pytest.raises(ClientError) as denied:
            await strangers.sqs.list_queues()
        assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError):
            await strangers.sns.publish(
                TopicArn="arn:aws:sns:us-east-1:123456789012:voltpay-events", Message="forged"
            )


_PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from voltpay.bridges.embedded import EmbeddedBus
    bus = EmbeddedBus(region="us-east-1")
    if sys.argv[1] == "thread":
        started = threading.Thread(target=bus.start)
        started.start()
        started.join()
    else:
        bus.start()
    print(bus.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) is gone as far as anyone cares.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_the_bus_dies_with_a_daemon_killed_by_sigkill(started_from: str) -> None:
    """From the main thread the kernel kills it with its parent; from any
    thread, its stdin closing ends it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, started_from],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


_FORGETFUL = textwrap.dedent(
    """
    import boto3, json
    from botocore.config import Config
    from voltpay.bridges.moto_tuning import REMEMBERED_DELETIONS, forget_what_moto_keeps
    from voltpay.bridges.moto_server import MotoServer
    forget_what_moto_keeps()
    from moto.core.model_instances import model_data
    from moto.sns import sns_backends
    from moto.sqs import sqs_backends
    server = MotoServer()
    url = server.start()
    options = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                   aws_secret_access_key="s", config=Config(proxies={}))
    sns, sqs = boto3.client("sns", **options), boto3.client("sqs", **options)
    topic = sns.create_topic(Name="t")["TopicArn"]
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"],
                  Attributes={"RawMessageDelivery": "true"})
    deleted = 0
    while deleted < REMEMBERED_DELETIONS + 200:
        sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
            {"Id": str(i), "Message": "x" * 500} for i in range(10)])
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        deleted += len(messages)
    tracked = sum(len(model.instances_tracked)
                  for models in model_data.values() for model in models.values())
    backend_topic = sns_backends["123456789012"]["us-east-1"].topics[topic]
    backend_queue = sqs_backends["123456789012"]["us-east-1"].queues["q"]
    print(json.dumps({
        "deleted": deleted, "tracked": tracked,
        "sent_notifications": len(backend_topic.sent_notifications),
        "deleted_handles": len(backend_queue.deleted_messages),
        "queued": len(backend_queue._messages),
    }))
    server.stop(grace_seconds=0.5)
    """
)


def test_the_bus_keeps_no_deleted_message() -> None:
    import json

    done = subprocess.run(
        [sys.executable, "-c", _FORGETFUL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    from voltpay.bridges.moto_tuning import REMEMBERED_DELETIONS

    assert figures["deleted"] > REMEMBERED_DELETIONS
    assert figures["tracked"] == 0
    assert figures["sent_notifications"] == 0
    assert figures["deleted_handles"] == REMEMBERED_DELETIONS
    assert figures["queued"] == 0


_DEPTH = textwrap.dedent(
    """
    import boto3, json
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from voltpay.bridges.moto_tuning import answer_regardless_of_depth
    from voltpay.bridges.moto_server import MotoServer
    answer_regardless_of_depth()
    from moto.sqs.models import Queue
    counted = {"n": 0}
    for name in ("approximate_number_of_messages", "approximate_number_of_messages_delayed",
                 "approximate_number_of_messages_not_visible"):
        prop = getattr(Queue, name)
        def counting(self, prop=prop):
            counted["n"] += 1
            return prop.fget(self)
        setattr(Queue, name, property(counting))
    server = MotoServer()
    url = server.start()
    options = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                   aws_secret_access_key="s", config=Config(proxies={}))
    sns, sqs = boto3.client("sns", **options), boto3.client("sqs", **options)
    topic = sns.create_topic(Name="t")["TopicArn"]
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"],
                  Attributes={"RawMessageDelivery": "true"})
    for batch in range(100):
        sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
            {"Id": str(i), "Message": f"{batch}-{i}"} for i in range(10)])
    before = counted["n"]
    first = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    second = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                 VisibilityTimeout=0)["Messages"]
    sqs.delete_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(first)])
    again = sqs.delete_message_batch(QueueUrl=queue, Entries=[
        {"Id": "0", "ReceiptHandle": first[0]["ReceiptHandle"]}])
    # Visible again at once: received a second time, under a new handle;
    # the first handle still deletes it, as in moto.
    third = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    old = {m["MessageId"]: m["ReceiptHandle"] for m in second}
    gone = sqs.delete_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "ReceiptHandle": old[m["MessageId"]]}
        for i, m in enumerate(third) if m["MessageId"] in old])
    sqs.delete_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(third)])
    during = counted["n"] - before
    try:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="not-a-handle")
        stranger = "deleted"
    except ClientError as error:
        stranger = error.response["Error"]["Code"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    # A message purged while received (moto's purge forgets the queue's
    # messages, not that they were received): its old handle deletes nothing,
    # and is refused as moto refuses it.
    purged = sqs.create_queue(QueueName="purged")["QueueUrl"]
    sqs.send_message(QueueUrl=purged, MessageBody="once")
    [held] = sqs.receive_message(QueueUrl=purged)["Messages"]
    sqs.purge_queue(QueueUrl=purged)
    try:
        sqs.delete_message(QueueUrl=purged, ReceiptHandle=held["ReceiptHandle"])
        purged_delete = "deleted"
    except ClientError as error:
        purged_delete = error.response["Error"]["Code"]
    # A FIFO queue's content-based de-duplication (read during a send) holds.
    fifo = sqs.create_queue(QueueName="d.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for _ in range(2):
        sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")
    deduplicated = sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
    handle = first[0]["ReceiptHandle"]
    print(json.dumps({
        "fifo_messages": deduplicated,
        "handle": [len(handle), handle.isascii() and handle.isalpha() and handle.islower()],
        "purged": purged_delete,
        "counted_during_calls": during,
        "first": len(first), "second": len(second), "third": len(third),
        "same_messages": sorted(m["MessageId"] for m in second) == sorted(
            m["MessageId"] for m in third),
        "deleted_again": len(again.get("Successful", [])),
        "deleted_by_old_handle": len(gone.get("Successful", [])),
        "stranger": stranger,
        "visible": attributes["ApproximateNumberOfMessages"],
        "not_visible": attributes["ApproximateNumberOfMessagesNotVisible"],
    }))
    server.stop(grace_seconds=0.5)
    """
)


def test_the_bus_answers_a_deep_queue_as_moto_would_without_scanning_it() -> None:
    """With 1,000 messages queued, a receive, a send and a delete build no
    count over the queue; what they answer is moto's own: a retried delete
    succeeds, an old handle of a message received again deletes it, a
    stranger's handle is refused, and the queue's counts stay right."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _DEPTH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["counted_during_calls"] == 0
    assert (figures["first"], figures["second"], figures["third"]) == (10, 10, 10)
    assert figures["same_messages"]
    assert figures["deleted_again"] == 1
    assert figures["deleted_by_old_handle"] == 10
    assert figures["stranger"] == "ReceiptHandleIsInvalid"
    assert figures["purged"] == "ReceiptHandleIsInvalid"
    assert figures["visible"] == str(1000 - 20)
    assert figures["not_visible"] == "0"
    assert figures["fifo_messages"] == "1"
    assert figures["handle"] == [185, True]
