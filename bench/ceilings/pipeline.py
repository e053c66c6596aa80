"""The pipeline ceiling: events through SNS → SQS with nothing else to do.

``python -m bench.ceilings.pipeline --endpoint embedded|URL --events N --mode raw|bridges``

Publishes N events (PublishBatch of 10, ``--concurrency`` batches at a time,
as voltpay's outbox relay does, and never more than ``--window`` events
published but not yet received: moto's server slows down as its queue grows,
so a deep queue would make a poor ceiling; one batch in flight, the default,
is the fastest on this machine) to a topic whose raw-delivery subscription
feeds a queue, while one consumer receives (10 at a time, long polls) and
deletes each batch (DeleteMessageBatch) in the background: no database, no
SMS. All N events are ready at the start, like N payments voltpay committed at
once; each message carries that time and the time of its PublishBatch call, so
ready → receive latency (what voltpay's commit → SMS is compared with) and
call → receive latency are known per message.

* ``--mode raw``: aioboto3 calls as they are (the ceiling);
* ``--mode bridges``: voltpay's own SnsPublisher and SqsConsumer.

``--endpoint embedded`` starts the embedded bus (moto's server in a child
process, behind its signature check), exactly as ``voltpay run`` does by
default, and calls it with its key pair; a URL points at an endpoint that is
already running (the bench's stub).

Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bench.procs import REPORT_MARK, use_uvloop
from bench.stats import percentile
from voltpay.bridges.aws import AwsClients
from voltpay.bridges.embedded import EmbeddedBus
from voltpay.bridges.provisioning import Provisioned, provision
from voltpay.bridges.sns import OutgoingEvent, SnsPublisher
from voltpay.bridges.sqs import SqsConsumer
from voltpay.config.settings import AwsSettings

BATCH = 10


def event_body(number: int, ready_at: float, published_at: float) -> tuple[str, str]:
    """An event the size of a payment_completed one, stamped with the time it
    was ready (handed to the publisher: voltpay's commit) and published."""
    event_id = str(uuid.uuid4())
    envelope = {
        "eventId": event_id,
        "type": "payment_completed",
        "version": 1,
        "occurredAt": "2026-01-01T00:00:00.000Z",
        "data": {
            "userId": str(uuid.uuid4()),
            "billId": str(uuid.uuid4()),
            "meterNumber": "45012345678",
            "customerName": "Bench Customer",
            "amount": "50.00",
            "walletId": str(uuid.uuid4()),
            "token": "12345678901234567890",
            "units": "0.73",
            "receiptNumber": f"SIM-{number:012d}",
            "walletBalance": "1000.00",
            "readyAt": ready_at,
            "publishedAt": published_at,
        },
    }
    return event_id, json.dumps(envelope, separators=(",", ":"))


@dataclass
class Tally:
    events: int
    first_publish: float = 0.0
    published_at_end: float = 0.0
    last_receive: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ready -> received
    call_latencies: list[float] = field(default_factory=list)  # PublishBatch call -> received
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    published: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def room(self, window: int) -> None:
        """Until fewer than ``window`` events are published but not received."""
        while window and self.published - len(self.seen) >= window:
            self.progress.clear()
            await self.progress.wait()

    def received(self, body: str, now: float) -> None:
        raw = json.loads(body)
        event_id = raw["eventId"]
        if event_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(event_id)
        self.latencies.append(now - float(raw["data"]["readyAt"]))
        self.call_latencies.append(now - float(raw["data"]["publishedAt"]))
        self.last_receive = now
        self.progress.set()
        if len(self.seen) >= self.events:
            self.done.set()


Publish = Callable[[list[tuple[str, str]]], Awaitable[None]]
Receive = Callable[[], Awaitable[list[tuple[str, Any]]]]
Delete = Callable[[list[Any]], Coroutine[Any, Any, None]]


def raw_calls(clients: AwsClients, made: Provisioned) -> tuple[Publish, Receive, Delete]:
    sns, sqs = clients.sns, clients.sqs

    async def publish(batch: list[tuple[str, str]]) -> None:
        entries = [
            {
                "Id": str(index),
                "Message": body,
                "MessageAttributes": {
                    "eventType": {"DataType": "String", "StringValue": "payment_completed"}
                },
            }
            for index, (_, body) in enumerate(batch)
        ]
        await sns.publish_batch(TopicArn=made.topic_arn, PublishBatchRequestEntries=entries)

    async def receive() -> list[tuple[str, Any]]:
        response = await sqs.receive_message(
            QueueUrl=made.queue_url,
            MaxNumberOfMessages=BATCH,
            WaitTimeSeconds=20,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        return [(m["Body"], m["ReceiptHandle"]) for m in response.get("Messages") or []]

    async def delete(handles: list[Any]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)]
        await sqs.delete_message_batch(QueueUrl=made.queue_url, Entries=entries)

    return publish, receive, delete


def bridge_calls(clients: AwsClients, made: Provisioned) -> tuple[Publish, Receive, Delete]:
    publisher = SnsPublisher(clients.sns_direct, made.topic_arn)
    consumer = SqsConsumer(clients.sqs_direct, made.queue_url)

    async def publish(batch: list[tuple[str, str]]) -> None:
        outcomes = await publisher.publish_batch(
            [OutgoingEvent(event_id, "payment_completed", body) for event_id, body in batch]
        )
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} events not published: {failed[0].error}")

    async def receive() -> list[tuple[str, Any]]:
        messages = await consumer.receive(BATCH, 20, 30)
        return [(m.body, m) for m in messages]

    async def delete(messages: list[Any]) -> None:
        await consumer.delete_batch(messages)

    return publish, receive, delete


def _keep(tasks: set[asyncio.Task[None]], coroutine: Coroutine[Any, Any, None]) -> None:
    """Run in the background, held in ``tasks`` until done."""
    task = asyncio.create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def measure(
    publish: Publish,
    receive: Receive,
    delete: Delete,
    events: int,
    concurrency: int,
    window: int,
) -> Tally:
    tally = Tally(events)
    slots = asyncio.Semaphore(concurrency)
    deleting: set[asyncio.Task[None]] = set()

    async def publish_one(start: int) -> None:
        async with slots:
            await tally.room(window)
            size = min(BATCH, events - start)
            tally.published += size
            now = time.time()
            batch = [event_body(n, tally.first_publish, now) for n in range(start, start + size)]
            await publish(batch)

    async def consume() -> None:
        while not tally.done.is_set():
            messages = await receive()
            now = time.time()
            for body, _ in messages:
                tally.received(body, now)
            if messages:
                _keep(deleting, delete([handle for _, handle in messages]))

    consumer = asyncio.create_task(consume())
    tally.first_publish = time.time()

    async def publish_all() -> None:
        await asyncio.gather(*(publish_one(start) for start in range(0, events, BATCH)))

    publishers = asyncio.create_task(publish_all())
    done = asyncio.create_task(tally.done.wait())
    try:
        # A consumer that fails would leave the publishers waiting for room.
        await asyncio.wait((publishers, consumer), return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()
        await publishers
        tally.published_at_end = time.time()
        await asyncio.wait((done, consumer), return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()  # re-raise the consumer's failure
    finally:
        for task in (consumer, done, publishers):
            task.cancel()
        if deleting:
            await asyncio.gather(*deleting, return_exceptions=True)
    return tally


async def run(
    endpoint: str, events: int, mode: str, concurrency: int, window: int, timeout: float
) -> dict[str, Any]:
    embedded = None
    key_id = secret = None
    if endpoint == "embedded":
        embedded = EmbeddedBus(region=AwsSettings().region)
        access = await embedded.astart()
        url = access.url
        key_id = access.credentials.access_key_id
        secret = access.credentials.secret_access_key
    else:
        url = endpoint
    suffix = uuid.uuid4().hex[:10]
    settings = AwsSettings(
        endpoint_url=url,
        topic_name=f"bench-{suffix}",
        queue_name=f"bench-{suffix}",
        dead_letter_queue_name=f"bench-{suffix}-dlq",
    )
    try:
        async with await AwsClients.open(
            endpoint_url=url,
            region=settings.region,
            access_key_id=key_id,
            secret_access_key=secret,
            local_endpoint=True,
        ) as clients:
            made = await provision(clients, settings)
            calls = raw_calls(clients, made) if mode == "raw" else bridge_calls(clients, made)
            try:
                tally = await asyncio.wait_for(
                    measure(*calls, events, concurrency, window), timeout
                )
            except TimeoutError:
                return {"events": events, "received": 0, "timed_out": True}
    finally:
        if embedded is not None:
            await embedded.astop()
    seconds = max(tally.last_receive - tally.first_publish, 1e-9)
    return {
        "mode": mode,
        "endpoint": "embedded" if embedded is not None else "url",
        "events": events,
        "received": len(tally.seen),
        "duplicates": tally.duplicates,
        "seconds": seconds,
        "events_per_s": len(tally.seen) / seconds,
        "publish_seconds": tally.published_at_end - tally.first_publish,
        "p50_ms": percentile(tally.latencies, 0.50) * 1000,
        "p99_ms": percentile(tally.latencies, 0.99) * 1000,
        "mean_ms": (statistics.fmean(tally.latencies) * 1000) if tally.latencies else 0.0,
        "call_p50_ms": percentile(tally.call_latencies, 0.50) * 1000,
        "call_p99_ms": percentile(tally.call_latencies, 0.99) * 1000,
        "timed_out": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", default="embedded", help="'embedded' or an endpoint URL")
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--mode", choices=("raw", "bridges"), default="raw")
    parser.add_argument("--concurrency", type=int, default=4, help="PublishBatch calls at once")
    parser.add_argument(
        "--window",
        type=int,
        default=10,
        help="most events published but not yet received (0: publish all at once)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    use_uvloop()
    result = asyncio.run(
        run(args.endpoint, args.events, args.mode, args.concurrency, args.window, args.timeout)
    )
    print(REPORT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
