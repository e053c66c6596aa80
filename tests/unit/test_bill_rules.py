from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

import pytest

from voltpay.domain.bills import (
    MOVES,
    BillStatus,
    check_payable,
    effective_status,
)
from voltpay.domain.errors import BillNotPayable
from voltpay.domain.events import (
    BillSummary,
    EventType,
    MalformedEvent,
    PaymentCompleted,
    PaymentFailed,
    WalletFunded,
    rfc3339,
)
from voltpay.domain.sms import SMS_EVENT_TYPES, fill_token, render_sms, sms_reference
from voltpay.http.errors import problem_for

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_the_state_machine_allows_only_the_documented_moves() -> None:
    assert {(move.source, move.target) for move in MOVES} == {
        (BillStatus.PENDING, BillStatus.PROCESSING),
        (BillStatus.PENDING, BillStatus.EXPIRED),
        (BillStatus.PROCESSING, BillStatus.PAID),
        (BillStatus.PROCESSING, BillStatus.FAILED),
    }


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


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 678900)) == "2026-01-02T03:04:05.678Z"


USER = uuid.UUID("11111111-1111-4111-8111-111111111111")
WALLET = uuid.UUID("22222222-2222-4222-8222-222222222222")


def _bill(meter_number: str) -> BillSummary:
    return BillSummary(
        bill_id=uuid.UUID("33333333-3333-4333-8333-333333333333"),
        meter_number=meter_number,
        customer_name="Ada Test",
        amount_minor=10000,
    )


def test_sms_texts_carry_what_the_user_needs() -> None:
    completed = fill_token(
        render_sms(
            PaymentCompleted(
                user_id=USER,
                bill=_bill("A123456"),
                wallet_id=WALLET,
                units=Decimal("1.47"),
                receipt_number="SIM-1",
                wallet_balance_minor=40000,
            ),
            "NGN",
        ),
        "12345678901234567890",
    )
    assert "1234-5678-9012-3456-7890" in completed
    assert "1.47 kWh" in completed
    assert "NGN 100.00" in completed
    failed = render_sms(
        PaymentFailed(
            user_id=USER,
            bill=_bill("A1"),
            wallet_id=WALLET,
            reason="vend failed",
            refunded_minor=10000,
            wallet_balance_minor=40000,
        ),
        "NGN",
    )
    assert "refunded" in failed and "NGN 400.00" in failed
    # A payment_completed without its units never reaches render_sms.
    with pytest.raises(MalformedEvent):
        PaymentCompleted.from_data({"amount": "1.00"})


def test_every_event_type_is_texted_and_each_text_ends_with_its_reference() -> None:
    assert set(get_args(EventType)) == SMS_EVENT_TYPES
    event_id = uuid.UUID("0123456789abcdef0123456789abcdef")
    assert sms_reference(event_id) == "0123456789"
    funded = WalletFunded(
        user_id=USER,
        wallet_id=WALLET,
        transaction_id=event_id,
        amount_minor=500,
        balance_minor=500,
        source="sandbox",
    )
    text = render_sms(funded, "NGN", sms_reference(event_id))
    assert text.endswith(" Ref 0123456789.")
