"""The SMS text for each event type: plain rendering, no I/O."""

from __future__ import annotations

import uuid
from typing import get_args

from voltpay.domain.events import (
    BillCreated,
    CreditReversed,
    EventType,
    Payload,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
    WalletFunded,
)
from voltpay.domain.money import format_minor
from voltpay.domain.sts import format_token

# The event types that become an SMS (every one); render_sms() has a text
# for each.
SMS_EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))


# Where a prepaid token goes in a text. The token is kept in its bill only:
# a stored text holds this mark, filled from the bill when the text is sent
# or shown to its owner. No text of ours holds braces otherwise, and no text
# holds anything a user typed.
TOKEN_MARK = "{token}"


class UnknownEvent(ValueError):
    pass


def fill_token(text: str, token: str | None) -> str:
    """The text with the bill's token (20 digits, as the bill keeps it) in
    the mark's place."""
    if TOKEN_MARK not in text:
        return text
    shown = format_token(token) if token and len(token) == 20 and token.isdigit() else "-"
    return text.replace(TOKEN_MARK, shown)


def token_bill(payload: Payload) -> uuid.UUID | None:
    """The bill whose token the event's text shows, if it shows one."""
    return payload.bill.bill_id if isinstance(payload, PaymentCompleted) else None


def sms_reference(event_id: uuid.UUID) -> str:
    """The event's short reference, printed at the end of its SMS: it tells
    a customer's messages apart for support, and lets the SMS provider's
    record of a message be matched to its event without doubt."""
    return event_id.hex[:10].upper()


def render_sms(payload: Payload, currency: str, reference: str | None = None) -> str:
    text = _text(payload, currency)
    return f"{text} Ref {reference}." if reference else text


def _text(payload: Payload, currency: str) -> str:
    """Amounts read as on the wire: ``format_minor``'s two-place form."""
    match payload:
        case UserRegistered():
            # Not the username: nothing a user typed goes into an SMS.
            return (
                "Welcome to voltpay! Your wallet is ready. Fund it to start paying for electricity."
            )
        case WalletFunded():
            return (
                f"voltpay: your wallet was credited with {currency} "
                f"{format_minor(payload.amount_minor)}. "
                f"New balance: {currency} {format_minor(payload.balance_minor)}."
            )
        case BillCreated(bill=bill):
            return (
                f"voltpay: bill of {currency} {format_minor(bill.amount_minor)} created for meter "
                f"{bill.meter_number} ({bill.customer_name}). Pay it before it expires."
            )
        case PaymentCompleted(bill=bill):
            return (
                f"voltpay: payment of {currency} {format_minor(bill.amount_minor)} for meter "
                f"{bill.meter_number} succeeded. Token: {TOKEN_MARK} "
                f"({payload.units} kWh). Receipt {payload.receipt_number}."
            )
        case PaymentFailed(bill=bill):
            return (
                f"voltpay: payment of {currency} {format_minor(bill.amount_minor)} for meter "
                f"{bill.meter_number} failed. {currency} {format_minor(payload.refunded_minor)} "
                f"was refunded to your wallet. "
                f"Balance: {currency} {format_minor(payload.wallet_balance_minor)}."
            )
        case CreditReversed():
            return (
                f"voltpay: a credit of {currency} {format_minor(payload.amount_minor)} "
                f"to your wallet was reversed. "
                f"New balance: {currency} {format_minor(payload.balance_minor)}."
            )
    raise UnknownEvent(f"no SMS for event type {payload.type!r}")
