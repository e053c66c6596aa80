"""Events as they travel on the bus: the envelope of API.md."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

EventType = Literal[
    "user_registered",
    "wallet_funded",
    "bill_created",
    "payment_completed",
    "payment_failed",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "user_registered",
    "wallet_funded",
    "bill_created",
    "payment_completed",
    "payment_failed",
)
EVENT_VERSION = 1


@dataclass(frozen=True)
class Event:
    event_id: uuid.UUID
    type: EventType
    occurred_at: datetime
    data: dict[str, Any]

    def envelope(self) -> dict[str, Any]:
        return {
            "eventId": str(self.event_id),
            "type": self.type,
            "version": EVENT_VERSION,
            "occurredAt": rfc3339(self.occurred_at),
            "data": self.data,
        }


def new_event(type_: EventType, data: dict[str, Any], now: datetime | None = None) -> Event:
    return Event(uuid.uuid4(), type_, now or datetime.now(UTC), data)


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and a Z, the one time format of the API."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # isoformat is about four times cheaper than strftime; it ends "+00:00".
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class MalformedEvent(ValueError):
    """A bus message that is not an event of ours; it belongs in the DLQ."""


def parse_envelope(body: str) -> Event:
    try:
        raw = orjson.loads(body)
        if not isinstance(raw, dict):
            raise MalformedEvent("the message is not a JSON object")
        type_ = raw["type"]
        if type_ not in EVENT_TYPES:
            raise MalformedEvent(f"unknown event type {type_!r}")
        data = raw["data"]
        if not isinstance(data, dict):
            raise MalformedEvent("event data is not an object")
        occurred = datetime.fromisoformat(str(raw["occurredAt"]).replace("Z", "+00:00"))
        return Event(uuid.UUID(str(raw["eventId"])), type_, occurred, data)
    except MalformedEvent:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedEvent(f"not an event envelope: {exc}") from None
