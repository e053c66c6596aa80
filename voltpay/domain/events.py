"""Events as they travel on the bus: the envelope of API.md around one typed
payload per event type of ARCHITECTURE.md's table.

The payload classes are the event contract. Producers build them, consumers
read them, and only this module turns them into the envelope's ``data``
object and back, so a consumer cannot read a field that no producer writes.
On the wire keys are camelCase, ids are UUID strings, money is a decimal
string with two places (``format_minor``'s form), times are RFC 3339 in UTC
with milliseconds, and every value is a string.

Reading is strict: a field that is missing or not in its wire form, a time
that is not a moment in UTC's range, or a control character (NUL and the
like) in any string makes the whole message a ``MalformedEvent``, which the
SQS poller moves to the dead-letter queue at once instead of half acting on
it. Keys the reader does not know are ignored, so a producer that adds a
field does not break a consumer that predates it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, TypeAlias

import orjson

from voltpay.domain.money import format_minor

EventType = Literal[
    "user_registered",
    "wallet_funded",
    "bill_created",
    "payment_completed",
    "payment_failed",
    "credit_reversed",
]
EVENT_VERSION = 1


class MalformedEvent(ValueError):
    """A bus message that is not an event of ours; it belongs in the DLQ.
    ``reason`` names why, as ``voltpay_events_rejected_total`` counts it."""

    reason: ClassVar[str] = "malformed"


class ControlCharacters(MalformedEvent):
    """A string of the message holds a control character (NUL and the like),
    which no field of ours carries and which PostgreSQL cannot store."""

    reason = "control_chars"


class StaleEvent(MalformedEvent):
    """The event is dated outside the window its consumer accepts."""

    reason = "stale"


class OversizedEvent(MalformedEvent):
    """The message is far larger than any event of ours."""

    reason = "too_large"


# C0 and C1 controls and DEL; tabs and newlines included (no field has them).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds and a Z, the one time format of the API."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # isoformat, which is cheaper than strftime, ends "+00:00".
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_rfc3339(text: str) -> datetime:
    """The moment ``rfc3339`` wrote, in UTC; a time without an offset is UTC,
    as ``rfc3339`` takes it. Raises ValueError for anything else, a moment
    outside UTC's calendar (``0001-01-01T00:00:00+14:00``) included."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the range of UTC") from None


class _Fields:
    """An event's ``data`` object, read one field at a time in its wire form."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = data

    def text(self, key: str) -> str:
        value = self._data.get(key)
        if isinstance(value, str):
            return value
        if key not in self._data:
            raise MalformedEvent(f"event data lacks {key}")
        raise MalformedEvent(f"event data {key} is not a string: {value!r}")

    def uuid(self, key: str) -> uuid.UUID:
        text = self.text(key)
        try:
            return uuid.UUID(text)
        except ValueError:
            raise MalformedEvent(f"event data {key} is not a UUID: {text!r}") from None

    def money(self, key: str) -> int:
        """Minor units from the one form ``format_minor`` writes: "-" for a
        negative amount, the whole units without leading zeros, a point and
        two digits. Its digits without the point are the minor units, and a
        text that ``format_minor`` would not write back is refused."""
        text = self.text(key)
        try:
            minor = int(text.replace(".", "", 1))
        except ValueError:
            minor = None
        if minor is None or format_minor(minor) != text:
            raise MalformedEvent(f"event data {key} is not an amount like '100.00': {text!r}")
        return minor

    def decimal(self, key: str) -> Decimal:
        """A finite decimal in the form ``str(Decimal)`` writes, so that it
        goes back on the wire unchanged."""
        text = self.text(key)
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or str(number) != text:
            raise MalformedEvent(f"event data {key} is not a decimal number: {text!r}")
        return number

    def time(self, key: str) -> datetime:
        text = self.text(key)
        try:
            return parse_rfc3339(text)
        except ValueError:
            raise MalformedEvent(f"event data {key} is not an RFC 3339 time: {text!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRegistered:
    """A user and their wallet exist; the user is welcomed by SMS."""

    type: ClassVar[Literal["user_registered"]] = "user_registered"
    user_id: uuid.UUID
    username: str
    wallet_id: uuid.UUID

    def to_data(self) -> dict[str, str]:
        return {
            "userId": str(self.user_id),
            "username": self.username,
            "walletId": str(self.wallet_id),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> UserRegistered:
        read = _Fields(data)
        return cls(
            user_id=read.uuid("userId"),
            username=read.text("username"),
            wallet_id=read.uuid("walletId"),
        )


FundingSource = Literal["sandbox", "gateway", "operator"]
FUNDING_SOURCES: tuple[FundingSource, ...] = ("sandbox", "gateway", "operator")


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletFunded:
    """A credit to a wallet, and the balance it left. ``source`` says where
    the money came from: ``sandbox`` (nothing was paid), ``gateway`` (a
    payment the gateway confirmed; ``reference`` is the funding's) or
    ``operator``."""

    type: ClassVar[Literal["wallet_funded"]] = "wallet_funded"
    user_id: uuid.UUID
    wallet_id: uuid.UUID
    transaction_id: uuid.UUID
    amount_minor: int
    balance_minor: int
    source: FundingSource
    reference: str | None = None

    def to_data(self) -> dict[str, str]:
        data = {
            "userId": str(self.user_id),
            "walletId": str(self.wallet_id),
            "transactionId": str(self.transaction_id),
            "amount": format_minor(self.amount_minor),
            "balance": format_minor(self.balance_minor),
            "source": self.source,
        }
        if self.reference is not None:
            data["reference"] = self.reference
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> WalletFunded:
        read = _Fields(data)
        # Every credit before sources were recorded was a sandbox credit.
        source = read.text("source") if "source" in data else "sandbox"
        if source not in FUNDING_SOURCES:
            raise MalformedEvent(f"event data source is not a funding source: {source!r}")
        return cls(
            user_id=read.uuid("userId"),
            wallet_id=read.uuid("walletId"),
            transaction_id=read.uuid("transactionId"),
            amount_minor=read.money("amount"),
            balance_minor=read.money("balance"),
            source=source,
            reference=read.text("reference") if "reference" in data else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditReversed:
    """An operator's credit taken back from a wallet, and the balance it
    left; ``credit_id`` is the credit's."""

    type: ClassVar[Literal["credit_reversed"]] = "credit_reversed"
    user_id: uuid.UUID
    wallet_id: uuid.UUID
    transaction_id: uuid.UUID
    credit_id: uuid.UUID
    amount_minor: int
    balance_minor: int

    def to_data(self) -> dict[str, str]:
        return {
            "userId": str(self.user_id),
            "walletId": str(self.wallet_id),
            "transactionId": str(self.transaction_id),
            "creditId": str(self.credit_id),
            "amount": format_minor(self.amount_minor),
            "balance": format_minor(self.balance_minor),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> CreditReversed:
        read = _Fields(data)
        return cls(
            user_id=read.uuid("userId"),
            wallet_id=read.uuid("walletId"),
            transaction_id=read.uuid("transactionId"),
            credit_id=read.uuid("creditId"),
            amount_minor=read.money("amount"),
            balance_minor=read.money("balance"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BillSummary:
    """The bill as every bill event names it: enough for its SMS to say which
    meter and how much without looking the bill up."""

    bill_id: uuid.UUID
    meter_number: str
    customer_name: str
    amount_minor: int

    def to_data(self) -> dict[str, str]:
        return {
            "billId": str(self.bill_id),
            "meterNumber": self.meter_number,
            "customerName": self.customer_name,
            "amount": format_minor(self.amount_minor),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> BillSummary:
        read = _Fields(data)
        return cls(
            bill_id=read.uuid("billId"),
            meter_number=read.text("meterNumber"),
            customer_name=read.text("customerName"),
            amount_minor=read.money("amount"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BillCreated:
    """A verified meter's bill, payable until it expires."""

    type: ClassVar[Literal["bill_created"]] = "bill_created"
    user_id: uuid.UUID
    bill: BillSummary
    expires_at: datetime

    def to_data(self) -> dict[str, str]:
        return {
            "userId": str(self.user_id),
            **self.bill.to_data(),
            "expiresAt": rfc3339(self.expires_at),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> BillCreated:
        read = _Fields(data)
        return cls(
            user_id=read.uuid("userId"),
            bill=BillSummary.from_data(data),
            expires_at=read.time("expiresAt"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentCompleted:
    """A bill paid and vended: the prepaid token goes to its owner by SMS.

    The token itself is not in the event, which the outbox and the audit log
    keep: the consumer reads it from the bill the summary names."""

    type: ClassVar[Literal["payment_completed"]] = "payment_completed"
    user_id: uuid.UUID
    bill: BillSummary
    wallet_id: uuid.UUID
    units: Decimal  # kWh
    receipt_number: str
    wallet_balance_minor: int

    def to_data(self) -> dict[str, str]:
        return {
            "userId": str(self.user_id),
            **self.bill.to_data(),
            "walletId": str(self.wallet_id),
            "units": str(self.units),
            "receiptNumber": self.receipt_number,
            "walletBalance": format_minor(self.wallet_balance_minor),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> PaymentCompleted:
        read = _Fields(data)
        return cls(
            user_id=read.uuid("userId"),
            bill=BillSummary.from_data(data),
            wallet_id=read.uuid("walletId"),
            units=read.decimal("units"),
            receipt_number=read.text("receiptNumber"),
            wallet_balance_minor=read.money("walletBalance"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentFailed:
    """A payment the provider did not vend, refunded to its wallet."""

    type: ClassVar[Literal["payment_failed"]] = "payment_failed"
    user_id: uuid.UUID
    bill: BillSummary
    wallet_id: uuid.UUID
    reason: str
    refunded_minor: int
    wallet_balance_minor: int

    def to_data(self) -> dict[str, str]:
        return {
            "userId": str(self.user_id),
            **self.bill.to_data(),
            "walletId": str(self.wallet_id),
            "reason": self.reason,
            "refunded": format_minor(self.refunded_minor),
            "walletBalance": format_minor(self.wallet_balance_minor),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> PaymentFailed:
        read = _Fields(data)
        return cls(
            user_id=read.uuid("userId"),
            bill=BillSummary.from_data(data),
            wallet_id=read.uuid("walletId"),
            reason=read.text("reason"),
            refunded_minor=read.money("refunded"),
            wallet_balance_minor=read.money("walletBalance"),
        )


Payload: TypeAlias = (
    UserRegistered | WalletFunded | BillCreated | PaymentCompleted | PaymentFailed | CreditReversed
)

# How each event type's data is read; every EventType has a reader.
_READERS: dict[str, Callable[[Mapping[str, object]], Payload]] = {
    UserRegistered.type: UserRegistered.from_data,
    WalletFunded.type: WalletFunded.from_data,
    BillCreated.type: BillCreated.from_data,
    PaymentCompleted.type: PaymentCompleted.from_data,
    PaymentFailed.type: PaymentFailed.from_data,
    CreditReversed.type: CreditReversed.from_data,
}


@dataclass(frozen=True)
class Event:
    """One event of ours: its id (consumers de-duplicate by it), when it
    happened, and its payload, whose class gives the event's type."""

    event_id: uuid.UUID
    occurred_at: datetime
    payload: Payload

    @property
    def type(self) -> EventType:
        return self.payload.type

    def envelope(self) -> dict[str, Any]:
        return {
            "eventId": str(self.event_id),
            "type": self.payload.type,
            "version": EVENT_VERSION,
            "occurredAt": rfc3339(self.occurred_at),
            "data": self.payload.to_data(),
        }


def new_event(payload: Payload, now: datetime | None = None) -> Event:
    return Event(uuid.uuid4(), now or datetime.now(UTC), payload)


def _check_strings(value: object) -> None:
    """Raise ``ControlCharacters`` when any string in ``value`` (keys too) holds one."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _CONTROL.search(item):
                raise ControlCharacters("a string of the message holds a control character")
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def parse_envelope(body: str | bytes) -> Event:
    """The event a bus message carries, its payload read strictly."""
    try:
        raw = orjson.loads(body)
        if not isinstance(raw, dict):
            raise MalformedEvent("the message is not a JSON object")
        _check_strings(raw)
        version = raw.get("version")
        if type(version) is not int or version != EVENT_VERSION:
            raise MalformedEvent(f"unknown envelope version {version!r}")
        type_ = raw["type"]
        read = _READERS.get(type_) if isinstance(type_, str) else None
        if read is None:
            raise MalformedEvent(f"unknown event type {type_!r}")
        data = raw["data"]
        if not isinstance(data, dict):
            raise MalformedEvent("event data is not an object")
        occurred = parse_rfc3339(raw["occurredAt"])
        return Event(uuid.UUID(str(raw["eventId"])), occurred, read(data))
    except MalformedEvent:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedEvent(f"not an event envelope: {exc}") from None
