from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from voltpay.domain.bills import (
    BillStatus,
    can_move,
    check_payable,
    effective_status,
)
from voltpay.domain.errors import BillNotPayable
from voltpay.domain.events import EventType, MalformedEvent, new_event, parse_envelope, rfc3339
from voltpay.domain.sms import SMS_EVENT_TYPES, UnknownEvent, render_sms, sms_reference
from voltpay.http.errors import problem_for

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_the_state_machine_allows_only_the_documented_moves() -> None:
    assert can_move(BillStatus.PENDING, BillStatus.PROCESSING)
    assert can_move(BillStatus.PENDING, BillStatus.EXPIRED)
    assert can_move(BillStatus.PROCESSING, BillStatus.PAID)
    assert can_move(BillStatus.PROCESSING, BillStatus.FAILED)
    assert not can_move(BillStatus.PENDING, BillStatus.PAID)
    assert not can_move(BillStatus.PAID, BillStatus.PROCESSING)
    assert not can_move(BillStatus.FAILED, BillStatus.PROCESSING)
    assert not can_move(BillStatus.EXPIRED, BillStatus.PROCESSING)


def test_a_pending_bill_past_expiry_is_expired() -> None:
    assert effective_status(BillStatus.PENDING, NOW, NOW) is BillStatus.EXPIRED
    assert (
        effective_status(BillStatus.PENDING, NOW + timedelta(seconds=1), NOW) is BillStatus.PENDING
    )
    assert effective_status(BillStatus.PAID, NOW - timedelta(days=1), NOW) is BillStatus.PAID


@pytest.mark.parametrize(
    ("status", "expires_in", "code", "http"),
    [
        (BillStatus.PAID, 60, "bill_already_paid", 409),
        (BillStatus.PROCESSING, 60, "bill_already_paid", 409),
        (BillStatus.PENDING, -1, "bill_expired", 410),
        (BillStatus.EXPIRED, 60, "bill_expired", 410),
        (BillStatus.FAILED, 60, "bill_not_payable", 409),
    ],
)
def test_why_a_bill_cannot_be_paid(
    status: BillStatus, expires_in: int, code: str, http: int
) -> None:
    with pytest.raises(BillNotPayable) as caught:
        check_payable(status, NOW + timedelta(seconds=expires_in), NOW)
    problem = problem_for(caught.value)
    assert problem is not None
    assert (problem.code, problem.status) == (code, http)


def test_a_pending_unexpired_bill_is_payable() -> None:
    check_payable(BillStatus.PENDING, NOW + timedelta(minutes=1), NOW)


def test_events_round_trip_through_their_envelope() -> None:
    event = new_event("bill_created", {"billId": "b"}, NOW)
    envelope = event.envelope()
    assert envelope["version"] == 1
    assert envelope["occurredAt"] == "2026-11-27T12:00:00.000Z"
    import json

    parsed = parse_envelope(json.dumps(envelope))
    assert parsed == event


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"type": "bill_created"}',
        '{"eventId": "x", "type": "nope", "data": {}, "occurredAt": "2026-01-01T00:00:00Z"}',
    ],
)
def test_malformed_bus_messages_are_recognised(body: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_envelope(body)


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 678900)) == "2026-01-02T03:04:05.678Z"


def test_sms_texts_carry_what_the_user_needs() -> None:
    completed = render_sms(
        "payment_completed",
        {
            "amount": "100.00",
            "meterNumber": "A123456",
            "token": "12345678901234567890",
            "units": "1.47",
            "receiptNumber": "SIM-1",
        },
        "NGN",
    )
    assert "1234-5678-9012-3456-7890" in completed
    assert "1.47 kWh" in completed
    assert "NGN 100.00" in completed
    failed = render_sms(
        "payment_failed",
        {"amount": "100.00", "meterNumber": "A1", "refunded": "100.00", "walletBalance": "400.00"},
        "NGN",
    )
    assert "refunded" in failed and "NGN 400.00" in failed
    with pytest.raises(UnknownEvent):
        render_sms("payment_completed", {"amount": "1.00"}, "NGN")


def test_every_event_type_is_texted_and_each_text_ends_with_its_reference() -> None:
    assert set(get_args(EventType)) == SMS_EVENT_TYPES
    event_id = uuid.UUID("0123456789abcdef0123456789abcdef")
    assert sms_reference(event_id) == "0123456789"
    text = render_sms(
        "wallet_funded", {"amount": "5.00", "balance": "5.00"}, "NGN", sms_reference(event_id)
    )
    assert text.endswith(" Ref 0123456789.")
