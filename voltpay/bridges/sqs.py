"""Consuming the notifications queue: long polls, batched deletes and extensions."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voltpay.bridges.aws import TRANSPORT_ERRORS, describe_error
from voltpay.bridges.direct import DirectCalls

_log = logging.getLogger(__name__)

MAX_BATCH = 10
# What one message, and one SendMessageBatch call in all, may carry: the
# body's bytes and each attribute's name, type and value.
MAX_MESSAGE_BYTES = 256 * 1024
# The attribute naming why a message was dead-lettered.
REJECTED_ATTRIBUTE = "voltpay.rejected"


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int  # ApproximateReceiveCount: 1 on first delivery
    # String message attributes (with raw delivery, the SNS ones, e.g. eventType).
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)


def _message_from(raw: Mapping[str, Any]) -> ReceivedMessage:
    system_attributes = raw.get("Attributes") or {}
    attributes = {
        name: str(value["StringValue"])
        for name, value in (raw.get("MessageAttributes") or {}).items()
        if "StringValue" in value
    }
    return ReceivedMessage(
        message_id=str(raw["MessageId"]),
        receipt_handle=str(raw["ReceiptHandle"]),
        body=str(raw.get("Body", "")),
        receive_count=int(system_attributes.get("ApproximateReceiveCount", "1")),
        attributes=attributes,
    )


def _attributes_size(attributes: Mapping[str, str]) -> int:
    return sum(
        len(name) + len("String") + len(value.encode()) for name, value in attributes.items()
    )


def _dead_letter_entry(index: int, message: ReceivedMessage, reason: str) -> dict[str, Any]:
    """The copy of a refused message for the dead-letter queue: its body as
    received, its attributes and the reason, as much of them as fits."""
    size = len(message.body.encode())
    attributes = {REJECTED_ATTRIBUTE: reason}  # first: at most ten are kept
    attributes.update(
        (name, value) for name, value in message.attributes.items() if name != REJECTED_ATTRIBUTE
    )
    if size + _attributes_size(attributes) > MAX_MESSAGE_BYTES:
        attributes = {REJECTED_ATTRIBUTE: reason}
    if size + _attributes_size(attributes) > MAX_MESSAGE_BYTES:
        attributes = {}
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": message.body}
    if attributes:
        entry["MessageAttributes"] = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in list(attributes.items())[:MAX_BATCH]
        }
    return entry


def _entry_size(entry: Mapping[str, Any]) -> int:
    attributes = entry.get("MessageAttributes") or {}
    return len(str(entry["MessageBody"]).encode()) + _attributes_size(
        {name: value["StringValue"] for name, value in attributes.items()}
    )


def _chunks(messages: Sequence[ReceivedMessage]) -> list[Sequence[ReceivedMessage]]:
    return [messages[start : start + MAX_BATCH] for start in range(0, len(messages), MAX_BATCH)]


class SqsConsumer:
    def __init__(
        self, sqs: DirectCalls, queue_url: str, *, dead_letter_queue_url: str | None = None
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._dead_letter_queue_url = dead_letter_queue_url or None

    @property
    def queue_url(self) -> str:
        return self._queue_url

    async def receive(
        self,
        max_messages: int = 10,
        wait_seconds: int = 20,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]:
        """Long-poll for up to max_messages; an empty list when none came in time.

        Errors propagate: the poller decides how long to back off. Cancelling the
        awaiting task abandons the poll at once (the connection is dropped).
        """
        if not 1 <= max_messages <= MAX_BATCH:
            raise ValueError(f"max_messages must be 1..{MAX_BATCH}, got {max_messages}")
        request: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = visibility_timeout
        response = await self._sqs.call("ReceiveMessage", **request)
        return [_message_from(raw) for raw in response.get("Messages") or []]

    async def delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[str]:
        """Delete handled messages; return the message ids that were not deleted.

        A message not deleted comes back after its visibility timeout, which
        the inbox de-duplicates, so failures are reported rather than raised.
        """

        async def call(chunk: list[dict[str, Any]]) -> Any:
            return await self._sqs.call(
                "DeleteMessageBatch", QueueUrl=self._queue_url, Entries=chunk
            )

        return await self._batched("DeleteMessageBatch", messages, {}, call)

    async def extend_visibility(
        self, messages: Sequence[ReceivedMessage], timeout_seconds: int
    ) -> list[str]:
        """Keep messages hidden for timeout_seconds more; return the ids that failed."""

        async def call(chunk: list[dict[str, Any]]) -> Any:
            return await self._sqs.client.change_message_visibility_batch(
                QueueUrl=self._queue_url, Entries=chunk
            )

        return await self._batched(
            "ChangeMessageVisibilityBatch",
            messages,
            {"VisibilityTimeout": timeout_seconds},
            call,
        )

    async def dead_letter_depth(self) -> int | None:
        """Messages waiting in the dead-letter queue; None when there is none.

        Raises when the queue cannot be read.
        """
        if self._dead_letter_queue_url is None:
            return None
        response = await self._sqs.client.get_queue_attributes(
            QueueUrl=self._dead_letter_queue_url,
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(response["Attributes"]["ApproximateNumberOfMessages"])

    async def dead_letter(
        self, refused: Sequence[tuple[ReceivedMessage, str]]
    ) -> list[ReceivedMessage]:
        """Move refused messages (each with the reason it was refused) to the
        dead-letter queue at once: a copy sent there, then the message
        deleted here. Returns the messages moved; one that could not be
        copied stays in the queue, where the redrive policy moves it after
        its last delivery.
        """
        if self._dead_letter_queue_url is None:
            return []
        entries = [
            _dead_letter_entry(index, message, reason)
            for index, (message, reason) in enumerate(refused)
        ]
        calls: list[list[dict[str, Any]]] = []
        size = MAX_MESSAGE_BYTES
        for entry in entries:
            entry_size = _entry_size(entry)
            if (
                len(calls) == 0
                or len(calls[-1]) == MAX_BATCH
                or size + entry_size > MAX_MESSAGE_BYTES
            ):
                calls.append([])
                size = 0
            calls[-1].append(entry)
            size += entry_size
        copied: list[ReceivedMessage] = []
        for chunk in calls:
            try:
                response = await self._sqs.call(
                    "SendMessageBatch", QueueUrl=self._dead_letter_queue_url, Entries=chunk
                )
            except TRANSPORT_ERRORS as exc:
                _log.warning(
                    "copying %d messages to the dead-letter queue failed: %s",
                    len(chunk),
                    describe_error(exc),
                )
                continue
            for failure in response.get("Failed") or []:
                _log.warning(
                    "copying a message to the dead-letter queue failed: %s",
                    failure.get("Code"),
                )
            copied += [refused[int(item["Id"])][0] for item in response.get("Successful") or []]
        failed = set(await self.delete_batch(copied))
        return [message for message in copied if message.message_id not in failed]

    async def dead_letter_age(self) -> float | None:
        """Seconds since the oldest of up to ten dead letters was sent (or
        first sent, for a message the redrive policy moved), from a look at
        them that leaves them where they are; None when none was seen.

        SQS gives no queue attribute for the oldest message's age (AWS has it
        only as the CloudWatch metric ApproximateAgeOfOldestMessage), so this
        is the oldest of those the look returns: the oldest of all when the
        queue holds ten or fewer, otherwise a lower bound.
        """
        if self._dead_letter_queue_url is None:
            return None
        response = await self._sqs.call(
            "ReceiveMessage",
            QueueUrl=self._dead_letter_queue_url,
            MaxNumberOfMessages=MAX_BATCH,
            WaitTimeSeconds=0,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["SentTimestamp"],
        )
        sent = [
            int(message["Attributes"]["SentTimestamp"])
            for message in response.get("Messages") or []
            if "SentTimestamp" in (message.get("Attributes") or {})
        ]
        if not sent:
            return None
        return max(0.0, time.time() - min(sent) / 1000)

    async def depth(self) -> int:
        """Messages in the queue, visible or in flight (approximate, as SQS says)."""
        response = await self._sqs.client.get_queue_attributes(
            QueueUrl=self._queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    async def check(self) -> None:
        """Raise unless the queue answers (for readiness)."""
        await self._sqs.client.get_queue_attributes(
            QueueUrl=self._queue_url, AttributeNames=["QueueArn"]
        )

    async def _batched(
        self,
        operation: str,
        messages: Sequence[ReceivedMessage],
        extra: Mapping[str, Any],
        call: Callable[[list[dict[str, Any]]], Awaitable[Any]],
    ) -> list[str]:
        failed_ids: list[str] = []
        for chunk in _chunks(messages):
            # Entry ids only need to be distinct within one request.
            entries = [
                {"Id": str(index), "ReceiptHandle": message.receipt_handle, **extra}
                for index, message in enumerate(chunk)
            ]
            try:
                response = await call(entries)
            except TRANSPORT_ERRORS as exc:
                _log.warning(
                    "SQS %s of %d messages failed: %s", operation, len(chunk), describe_error(exc)
                )
                failed_ids.extend(message.message_id for message in chunk)
                continue
            succeeded = {item["Id"] for item in response.get("Successful") or []}
            for failure in response.get("Failed") or []:
                _log.warning(
                    "SQS %s entry failed: %s %s",
                    operation,
                    failure.get("Code"),
                    failure.get("Message"),
                )
            failed_ids.extend(
                message.message_id
                for index, message in enumerate(chunk)
                if str(index) not in succeeded
            )
        return failed_ids
