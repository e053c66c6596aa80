"""An SNS + SQS endpoint that answers at once: ``python -m bench.stub_aws --port N``.

It speaks just enough of the two wire protocols botocore uses (SNS: the query
protocol with XML answers; SQS: JSON 1.0) for voltpay's provisioning, its
bridges and the bench's probes: topics, queues, raw-delivery subscriptions,
PublishBatch, ReceiveMessage (with long polls that end as soon as a message
arrives), DeleteMessageBatch and visibility changes. Messages live in memory.
Nothing is checked (no signatures, no policies): it stands for an SNS/SQS that
costs nothing, so what is measured against it is the client side alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import inspect
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from bench.procs import use_uvloop

ACCOUNT = "000000000000"
REGION = "us-east-1"
_SNS_NS = "http://sns.amazonaws.com/doc/2010-03-31/"


@dataclass
class _Message:
    message_id: str
    body: str
    attributes: dict[str, dict[str, str]]
    receive_count: int = 0


@dataclass
class _Queue:
    name: str
    ready: collections.deque[_Message] = field(default_factory=collections.deque)
    # receipt handle -> (message, monotonic deadline)
    in_flight: dict[str, tuple[_Message, float]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    visibility_timeout: float = 30.0

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.name}"

    def put(self, message: _Message) -> None:
        self.ready.append(message)
        self.arrived.set()

    def _requeue_expired(self) -> None:
        now = time.monotonic()
        expired = [h for h, (_, deadline) in self.in_flight.items() if deadline <= now]
        for handle in expired:
            message, _ = self.in_flight.pop(handle)
            self.ready.append(message)

    def take(self, count: int, visibility: float) -> list[tuple[str, _Message]]:
        self._requeue_expired()
        taken: list[tuple[str, _Message]] = []
        deadline = time.monotonic() + visibility
        while self.ready and len(taken) < count:
            message = self.ready.popleft()
            message.receive_count += 1
            handle = uuid.uuid4().hex
            self.in_flight[handle] = (message, deadline)
            taken.append((handle, message))
        if not self.ready:
            self.arrived.clear()
        return taken


class StubAws:
    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        self.topics: dict[str, list[str]] = {}  # topic arn -> queue names
        self.subscriptions: dict[str, tuple[str, str]] = {}  # arn -> (topic arn, queue arn)
        self.base_url = ""
        self.requests = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)

    # -- plumbing ----------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self.base_url:
            self.base_url = f"http://{request.host}"
        target = request.headers.get("X-Amz-Target", "")
        if target.startswith("AmazonSQS."):
            payload = await request.json(loads=json.loads) if request.can_read_body else {}
            return await self._sqs(target.partition(".")[2], payload)
        form = await request.post()
        params = {key: str(value) for key, value in form.items()}
        return self._sns(params.get("Action", ""), params)

    def _queue(self, name_or_url: str) -> _Queue:
        name = name_or_url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name)
        return queue

    def _queue_url(self, queue: _Queue) -> str:
        return f"{self.base_url}/{ACCOUNT}/{queue.name}"

    # -- SQS (JSON 1.0) ----------------------------------------------------

    async def _sqs(self, operation: str, body: dict[str, Any]) -> web.Response:
        self.calls[operation] += 1
        handler = getattr(self, f"_sqs_{operation}", None)
        if handler is None:
            return _json({"__type": "InvalidAction", "message": operation}, status=400)
        result = handler(body)
        if inspect.isawaitable(result):
            result = await result
        return _json(result)

    def _sqs_CreateQueue(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"QueueUrl": self._queue_url(self._queue(body["QueueName"]))}

    def _sqs_GetQueueUrl(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._sqs_CreateQueue(body)

    def _sqs_GetQueueAttributes(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        return {
            "Attributes": {
                "QueueArn": queue.arn,
                "ApproximateNumberOfMessages": str(len(queue.ready)),
                "ApproximateNumberOfMessagesNotVisible": str(len(queue.in_flight)),
                "VisibilityTimeout": str(int(queue.visibility_timeout)),
            }
        }

    def _sqs_SetQueueAttributes(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        timeout = (body.get("Attributes") or {}).get("VisibilityTimeout")
        if timeout is not None:
            queue.visibility_timeout = float(timeout)
        return {}

    def _sqs_PurgeQueue(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        queue.ready.clear()
        queue.in_flight.clear()
        return {}

    def _sqs_SendMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        message = _Message(str(uuid.uuid4()), body["MessageBody"], {})
        queue.put(message)
        return {"MessageId": message.message_id, "MD5OfMessageBody": _md5(message.body)}

    async def _sqs_ReceiveMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        count = int(body.get("MaxNumberOfMessages", 1))
        visibility = float(body.get("VisibilityTimeout", queue.visibility_timeout))
        wait = float(body.get("WaitTimeSeconds", 0))
        taken = queue.take(count, visibility)
        if not taken and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.arrived.wait(), wait)
            taken = queue.take(count, visibility)
        messages = [
            {
                "MessageId": message.message_id,
                "ReceiptHandle": handle,
                "MD5OfBody": _md5(message.body),
                "Body": message.body,
                "Attributes": {"ApproximateReceiveCount": str(message.receive_count)},
                "MessageAttributes": message.attributes,
            }
            for handle, message in taken
        ]
        return {"Messages": messages} if messages else {}

    def _sqs_DeleteMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        self._queue(body["QueueUrl"]).in_flight.pop(body["ReceiptHandle"], None)
        return {}

    def _sqs_DeleteMessageBatch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        for entry in body.get("Entries") or []:
            queue.in_flight.pop(entry["ReceiptHandle"], None)
        return {"Successful": [{"Id": e["Id"]} for e in body.get("Entries") or []], "Failed": []}

    def _sqs_ChangeMessageVisibilityBatch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(body["QueueUrl"])
        for entry in body.get("Entries") or []:
            held = queue.in_flight.get(entry["ReceiptHandle"])
            if held is not None:
                deadline = time.monotonic() + float(entry.get("VisibilityTimeout", 0))
                queue.in_flight[entry["ReceiptHandle"]] = (held[0], deadline)
        return {"Successful": [{"Id": e["Id"]} for e in body.get("Entries") or []], "Failed": []}

    # -- SNS (query protocol, XML answers) ---------------------------------

    def _sns(self, action: str, params: dict[str, str]) -> web.Response:
        self.calls[action] += 1
        handler = getattr(self, f"_sns_{action}", None)
        if handler is None:
            error = (
                f'<ErrorResponse xmlns="{_SNS_NS}"><Error><Type>Sender</Type>'
                f"<Code>InvalidAction</Code><Message>{escape(action)}</Message></Error>"
                "<RequestId>stub</RequestId></ErrorResponse>"
            )
            return web.Response(text=error, status=400, content_type="text/xml")
        result: str = handler(params)
        xml = (
            f'<{action}Response xmlns="{_SNS_NS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            f"</{action}Response>"
        )
        return web.Response(text=xml, content_type="text/xml")

    def _sns_CreateTopic(self, params: dict[str, str]) -> str:
        arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{params['Name']}"
        self.topics.setdefault(arn, [])
        return f"<TopicArn>{escape(arn)}</TopicArn>"

    def _sns_GetTopicAttributes(self, params: dict[str, str]) -> str:
        arn = params["TopicArn"]
        self.topics.setdefault(arn, [])
        return (
            "<Attributes><entry><key>TopicArn</key>"
            f"<value>{escape(arn)}</value></entry></Attributes>"
        )

    def _sns_ListSubscriptionsByTopic(self, params: dict[str, str]) -> str:
        topic = params["TopicArn"]
        members = "".join(
            f"<member><TopicArn>{escape(t)}</TopicArn><Protocol>sqs</Protocol>"
            f"<SubscriptionArn>{escape(arn)}</SubscriptionArn><Owner>{ACCOUNT}</Owner>"
            f"<Endpoint>{escape(queue_arn)}</Endpoint></member>"
            for arn, (t, queue_arn) in self.subscriptions.items()
            if t == topic
        )
        return f"<Subscriptions>{members}</Subscriptions>"

    def _sns_Subscribe(self, params: dict[str, str]) -> str:
        topic, queue_arn = params["TopicArn"], params["Endpoint"]
        arn = f"{topic}:{uuid.uuid4()}"
        self.subscriptions[arn] = (topic, queue_arn)
        self.topics.setdefault(topic, []).append(queue_arn.rsplit(":", 1)[-1])
        return f"<SubscriptionArn>{escape(arn)}</SubscriptionArn>"

    def _sns_SetSubscriptionAttributes(self, params: dict[str, str]) -> str:
        return ""

    def _sns_Publish(self, params: dict[str, str]) -> str:
        message_id = self._deliver(params["TopicArn"], params["Message"], {})
        return f"<MessageId>{message_id}</MessageId>"

    def _sns_PublishBatch(self, params: dict[str, str]) -> str:
        topic = params["TopicArn"]
        members = []
        for index in itertools.count(1):
            prefix = f"PublishBatchRequestEntries.member.{index}."
            entry_id = params.get(prefix + "Id")
            if entry_id is None:
                break
            attributes: dict[str, dict[str, str]] = {}
            for number in itertools.count(1):
                attribute = f"{prefix}MessageAttributes.entry.{number}."
                name = params.get(attribute + "Name")
                if name is None:
                    break
                attributes[name] = {
                    "DataType": params.get(attribute + "Value.DataType", "String"),
                    "StringValue": params.get(attribute + "Value.StringValue", ""),
                }
            message_id = self._deliver(topic, params.get(prefix + "Message", ""), attributes)
            members.append(
                f"<member><Id>{escape(entry_id)}</Id><MessageId>{message_id}</MessageId></member>"
            )
        return f"<Successful>{''.join(members)}</Successful><Failed/>"

    def _deliver(self, topic: str, body: str, attributes: dict[str, dict[str, str]]) -> str:
        message_id = str(uuid.uuid4())
        for queue_name in self.topics.get(topic, []):
            # Raw message delivery: the queue gets the message itself.
            self._queue(queue_name).put(_Message(str(uuid.uuid4()), body, dict(attributes)))
        return message_id


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        content_type="application/x-amz-json-1.0",
    )


def build_app(stub: StubAws | None = None) -> web.Application:
    state = stub or StubAws()

    async def entry(request: web.Request) -> web.Response:
        return await state.handle(request)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        """Calls answered so far, by operation (the bench reads it)."""
        return _json({"calls": dict(state.calls)})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_route("*", "/{tail:.*}", entry)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    use_uvloop()
    # Long polls may be waiting: nothing in flight here is worth waiting for.
    web.run_app(
        build_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=0.5,
    )


if __name__ == "__main__":
    main()
