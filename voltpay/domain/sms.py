"""The SMS text for each event type: plain rendering, no I/O."""

from __future__ import annotations

import uuid
from typing import Any

from voltpay.domain.sts import format_token

# The event types that become an SMS; render_sms() has a text for each.
SMS_EVENT_TYPES = frozenset(
    {"user_registered", "wallet_funded", "bill_created", "payment_completed", "payment_failed"}
)


class UnknownEvent(ValueError):
    pass


def _get(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise UnknownEvent(f"event data lacks {key}")
    return str(value)


def _token(raw: str) -> str:
    digits = raw.replace("-", "")
    return format_token(digits) if len(digits) == 20 and digits.isdigit() else raw


def sms_reference(event_id: uuid.UUID) -> str:
    """The event's short reference, printed at the end of its SMS: it tells
    a customer's messages apart for support, and lets the SMS provider's
    record of a message be matched to its event without doubt."""
    return event_id.hex[:10].upper()


def render_sms(
    event_type: str, data: dict[str, Any], currency: str, reference: str | None = None
) -> str:
    text = _text(event_type, data, currency)
    return f"{text} Ref {reference}." if reference else text


def _text(event_type: str, data: dict[str, Any], currency: str) -> str:
    if event_type == "user_registered":
        return (
            f"Welcome to voltpay, {_get(data, 'username')}! Your wallet is ready. "
            "Fund it to start paying for electricity."
        )
    if event_type == "wallet_funded":
        return (
            f"voltpay: your wallet was credited with {currency} {_get(data, 'amount')}. "
            f"New balance: {currency} {_get(data, 'balance')}."
        )
    if event_type == "bill_created":
        return (
            f"voltpay: bill of {currency} {_get(data, 'amount')} created for meter "
            f"{_get(data, 'meterNumber')} ({_get(data, 'customerName')}). Pay it before it expires."
        )
    if event_type == "payment_completed":
        return (
            f"voltpay: payment of {currency} {_get(data, 'amount')} for meter "
            f"{_get(data, 'meterNumber')} succeeded. Token: {_token(_get(data, 'token'))} "
            f"({_get(data, 'units')} kWh). Receipt {_get(data, 'receiptNumber')}."
        )
    if event_type == "payment_failed":
        return (
            f"voltpay: payment of {currency} {_get(data, 'amount')} for meter "
            f"{_get(data, 'meterNumber')} failed. {currency} {_get(data, 'refunded')} was "
            f"refunded to your wallet. Balance: {currency} {_get(data, 'walletBalance')}."
        )
    raise UnknownEvent(f"no SMS for event type {event_type!r}")
