"""Publishing events to the SNS topic, ten at a time."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ParamValidationError

from voltpay.bridges.aws import TRANSPORT_ERRORS, describe_error
from voltpay.bridges.direct import DirectCalls
from voltpay.domain.event_signing import SIGNATURE_ATTRIBUTE

_log = logging.getLogger(__name__)

MAX_BATCH = 10
_MAX_ENTRY_ID_LENGTH = 80
_UNSAFE_ENTRY_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class OutgoingEvent:
    event_id: str
    event_type: str
    body: str  # the event's JSON text, delivered to consumers byte for byte
    # The ``signature`` message attribute (``voltpay.domain.event_signing``),
    # which consumers check before they read the body.
    signature: str | None = None


class PublishFailed(Exception):
    """SNS did not take an event; the text says what it answered."""


@dataclass(frozen=True)
class PublishOutcome:
    event_id: str
    ok: bool
    message_id: str | None
    error: str | None
    retryable: bool


def entry_ids(events: Sequence[OutgoingEvent]) -> list[str]:
    """Batch entry ids derived from the event ids, distinct within the batch.

    SNS allows only letters, digits, '-' and '_' (at most 80), and rejects the
    whole batch when two entries share an id.
    """
    taken: set[str] = set()
    ids: list[str] = []
    for event in events:
        safe = _UNSAFE_ENTRY_ID_CHARS.sub("_", event.event_id)[:_MAX_ENTRY_ID_LENGTH]
        candidate, attempt = safe, 0
        while not candidate or candidate in taken:
            attempt += 1
            suffix = f"-{attempt}"
            candidate = safe[: _MAX_ENTRY_ID_LENGTH - len(suffix)] + suffix
        taken.add(candidate)
        ids.append(candidate)
    return ids


def outcomes_from_response(
    events: Sequence[OutgoingEvent], ids: Sequence[str], response: Mapping[str, Any]
) -> list[PublishOutcome]:
    """One outcome per event, in the order given, from a PublishBatch response."""
    successful = {item["Id"]: item for item in response.get("Successful") or []}
    failed = {item["Id"]: item for item in response.get("Failed") or []}
    outcomes: list[PublishOutcome] = []
    for event, entry_id in zip(events, ids, strict=True):
        if entry_id in successful:
            message_id = successful[entry_id].get("MessageId")
            outcomes.append(PublishOutcome(event.event_id, True, message_id, None, False))
        elif entry_id in failed:
            failure = failed[entry_id]
            error = f"{failure.get('Code', 'Unknown')}: {failure.get('Message', '')}".rstrip(": ")
            # SenderFault=True means this entry will fail the same way again.
            retryable = not failure.get("SenderFault", False)
            outcomes.append(PublishOutcome(event.event_id, False, None, error, retryable))
        else:
            outcomes.append(
                PublishOutcome(
                    event.event_id, False, None, "entry missing from PublishBatch response", True
                )
            )
    return outcomes


def _attributes(event: OutgoingEvent) -> dict[str, dict[str, str]]:
    attributes = {"eventType": {"DataType": "String", "StringValue": event.event_type}}
    if event.signature is not None:
        attributes[SIGNATURE_ATTRIBUTE] = {"DataType": "String", "StringValue": event.signature}
    return attributes


class SnsPublisher:
    def __init__(self, sns: DirectCalls, topic_arn: str) -> None:
        self._sns = sns
        self._topic_arn = topic_arn

    @property
    def topic_arn(self) -> str:
        return self._topic_arn

    async def publish_batch(self, events: Sequence[OutgoingEvent]) -> list[PublishOutcome]:
        """Publish up to ten events in one call; report each one's fate.

        Never raises for SNS being unreachable or refusing the call: the caller
        (the outbox relay) keeps those events and tries again later.
        """
        if len(events) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} events per batch, got {len(events)}")
        if not events:
            return []
        ids = entry_ids(events)
        entries = [
            {
                "Id": entry_id,
                "Message": event.body,
                "MessageAttributes": _attributes(event),
            }
            for event, entry_id in zip(events, ids, strict=True)
        ]
        try:
            response = await self._sns.call(
                "PublishBatch", TopicArn=self._topic_arn, PublishBatchRequestEntries=entries
            )
        except ParamValidationError as exc:
            # botocore refused to send it: sending it again cannot help.
            error = describe_error(exc)
            _log.error("SNS PublishBatch of %d events is invalid: %s", len(events), error)
            return [PublishOutcome(event.event_id, False, None, error, False) for event in events]
        except TRANSPORT_ERRORS as exc:
            error = describe_error(exc)
            _log.warning("SNS PublishBatch of %d events failed: %s", len(events), error)
            return [PublishOutcome(event.event_id, False, None, error, True) for event in events]
        outcomes = outcomes_from_response(events, ids, response)
        failures = sum(not outcome.ok for outcome in outcomes)
        if failures:
            _log.warning("SNS PublishBatch: %d of %d events failed", failures, len(events))
        return outcomes

    async def check(self) -> None:
        """Raise unless the topic answers (for readiness)."""
        await self._sns.client.get_topic_attributes(TopicArn=self._topic_arn)
