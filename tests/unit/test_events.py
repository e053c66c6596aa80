"""The event contract: each payload's wire form, its round trip and the
strictness of reading it back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

import orjson
import pytest

from voltpay.domain.events import (
    BillCreated,
    BillSummary,
    CreditReversed,
    EventType,
    MalformedEvent,
    Payload,
    PaymentCompleted,
    PaymentFailed,
    UserRegistered,
    WalletFunded,
    new_event,
    parse_envelope,
)
from voltpay.domain.sms import TOKEN_MARK, fill_token, render_sms, sms_reference, token_bill

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
USER = uuid.UUID("11111111-1111-4111-8111-111111111111")
WALLET = uuid.UUID("22222222-2222-4222-8222-222222222222")
BILL = BillSummary(
    bill_id=uuid.UUID("33333333-3333-4333-8333-333333333333"),
    meter_number="A123456",
    customer_name="Zoë Ọlá",
    amount_minor=10000,
)

SAMPLES: list[Payload] = [
    UserRegistered(user_id=USER, username="ada", wallet_id=WALLET),
    WalletFunded(
        user_id=USER,
        wallet_id=WALLET,
        transaction_id=uuid.UUID("44444444-4444-4444-8444-444444444444"),
        amount_minor=50005,
        balance_minor=50005,
        source="gateway",
        reference="vp_0123456789abcdef",
    ),
    # Times travel with millisecond precision.
    BillCreated(user_id=USER, bill=BILL, expires_at=datetime(2026, 11, 27, 12, 30, 0, 250000, UTC)),
    PaymentCompleted(
        user_id=USER,
        bill=BILL,
        wallet_id=WALLET,
        units=Decimal("1.47"),
        receipt_number="SIM-1",
        wallet_balance_minor=40000,
    ),
    PaymentFailed(
        user_id=USER,
        bill=BILL,
        wallet_id=WALLET,
        reason="the provider refused the vend",
        refunded_minor=10000,
        wallet_balance_minor=40000,
    ),
    CreditReversed(
        user_id=USER,
        wallet_id=WALLET,
        transaction_id=uuid.UUID("66666666-6666-4666-8666-666666666666"),
        credit_id=uuid.UUID("77777777-7777-4777-8777-777777777777"),
        amount_minor=8000,
        balance_minor=2005,
    ),
]
BY_TYPE = {sample.type: sample for sample in SAMPLES}


def _envelope(type_: object, data: object) -> str:
    return orjson.dumps(
        {
            "eventId": str(uuid.uuid4()),
            "type": type_,
            "version": 1,
            "occurredAt": "2026-11-27T12:00:00.000Z",
            "data": data,
        }
    ).decode()


def test_every_event_type_has_a_payload() -> None:
    assert set(BY_TYPE) == set(get_args(EventType))


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.type)
def test_each_payload_round_trips_through_its_data(payload: Payload) -> None:
    data = payload.to_data()
    assert all(isinstance(value, str) for value in data.values())
    assert type(payload).from_data(data) == payload


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.type)
def test_each_event_round_trips_through_its_envelope(payload: Payload) -> None:
    event = new_event(payload, NOW)
    envelope = event.envelope()
    assert envelope["type"] == payload.type == event.type
    assert envelope["version"] == 1
    assert envelope["occurredAt"] == "2026-11-27T12:00:00.000Z"
    assert parse_envelope(orjson.dumps(envelope)) == event
    assert parse_envelope(orjson.dumps(envelope).decode()) == event


def test_the_wire_form_is_the_one_already_in_outboxes_and_queues() -> None:
    """Byte for byte what producers wrote before the payloads were typed:
    keys in this order, money as two-place strings, times in UTC with
    milliseconds; and no prepaid token, which stays in its bill."""
    event_id = uuid.UUID("55555555-5555-4555-8555-555555555555")
    event = new_event(BY_TYPE["payment_completed"], NOW)
    body = orjson.dumps({**event.envelope(), "eventId": str(event_id)})
    assert body == (
        b'{"eventId":"55555555-5555-4555-8555-555555555555","type":"payment_completed",'
        b'"version":1,"occurredAt":"2026-11-27T12:00:00.000Z","data":{'
        b'"userId":"11111111-1111-4111-8111-111111111111",'
        b'"billId":"33333333-3333-4333-8333-333333333333","meterNumber":"A123456",'
        b'"customerName":"Zo\xc3\xab \xe1\xbb\x8cl\xc3\xa1","amount":"100.00",'
        b'"walletId":"22222222-2222-4222-8222-222222222222",'
        b'"units":"1.47","receiptNumber":"SIM-1","walletBalance":"400.00"}}'
    )
    assert BY_TYPE["bill_created"].to_data()["expiresAt"] == "2026-11-27T12:30:00.250Z"
    assert BY_TYPE["wallet_funded"].to_data()["amount"] == "500.05"


def test_keys_a_reader_does_not_know_are_ignored() -> None:
    payload = BY_TYPE["user_registered"]
    assert UserRegistered.from_data(payload.to_data() | {"locale": "en-NG"}) == payload


def test_money_reads_back_every_form_format_minor_writes() -> None:
    for minor in (0, 1, 9, 10, 99, 100, 101, 12345, 10**16, -1, -150):
        funded = WalletFunded(
            user_id=USER,
            wallet_id=WALLET,
            transaction_id=USER,
            amount_minor=minor,
            balance_minor=minor,
            source="sandbox",
        )
        assert WalletFunded.from_data(funded.to_data()) == funded


def _assert_refused(type_: str, key: str, value: object) -> None:
    """The sample of ``type_`` with ``key`` set to ``value`` is refused, naming the key."""
    data = {**BY_TYPE[type_].to_data(), key: value}
    with pytest.raises(MalformedEvent, match=key):
        parse_envelope(_envelope(type_, data))


# Fields a reader may find absent: events written before they existed.
_OPTIONAL = {("wallet_funded", "source"), ("wallet_funded", "reference")}


def _missing_fields() -> list[tuple[str, str]]:
    return [
        (sample.type, key)
        for sample in SAMPLES
        for key in sample.to_data()
        if (sample.type, key) not in _OPTIONAL
    ]


@pytest.mark.parametrize(("type_", "key"), _missing_fields())
def test_a_missing_field_is_malformed(type_: str, key: str) -> None:
    data = BY_TYPE[type_].to_data()
    del data[key]
    with pytest.raises(MalformedEvent, match=f"lacks {key}"):
        parse_envelope(_envelope(type_, data))


@pytest.mark.parametrize("wrong", [None, 5, 5.5, True, [], {}])
@pytest.mark.parametrize(
    ("type_", "key"),
    [
        ("wallet_funded", "amount"),
        ("user_registered", "userId"),
        ("user_registered", "username"),
        ("payment_completed", "units"),
    ],
)
def test_a_field_of_the_wrong_type_is_malformed(type_: str, key: str, wrong: Any) -> None:
    _assert_refused(type_, key, wrong)


@pytest.mark.parametrize(
    "amount",
    [
        "",
        "5",
        "5.5",
        "5.000",
        "05.00",
        "+5.00",
        " 5.00",
        "5.00 ",
        "-0.00",
        "5,00",
        "1_000.00",
        "1e3",
        "NaN",
        "5.0O",
        "\u0665.\u0660\u0660",  # Arabic-Indic digits, which int() accepts
        "5.-1",
        "." + "1" * 5000,
    ],
)
def test_a_bad_money_string_is_malformed(amount: str) -> None:
    _assert_refused("payment_failed", "walletBalance", amount)


@pytest.mark.parametrize(
    ("type_", "key", "value"),
    [
        ("user_registered", "walletId", "not-a-uuid"),
        ("payment_failed", "billId", ""),
        ("payment_completed", "units", "NaN"),
        ("payment_completed", "units", "Infinity"),
        ("payment_completed", "units", "1.4.7"),
        ("payment_completed", "units", " 1.47"),
        ("bill_created", "expiresAt", "tomorrow"),
        ("bill_created", "expiresAt", ""),
    ],
)
def test_a_field_not_in_its_wire_form_is_malformed(type_: str, key: str, value: str) -> None:
    _assert_refused(type_, key, value)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"type": "bill_created"}',
        _envelope("nope", {}),
        _envelope(None, {}),
        _envelope(["user_registered"], BY_TYPE["user_registered"].to_data()),
        _envelope("user_registered", [BY_TYPE["user_registered"].to_data()]),
        _envelope("user_registered", BY_TYPE["user_registered"].to_data()).replace(
            "2026-11-27T12:00:00.000Z", "noon"
        ),
    ],
)
def test_malformed_bus_messages_are_recognised(body: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_envelope(body)


def test_an_unknown_event_type_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="unknown event type 'user_deleted'"):
        parse_envelope(_envelope("user_deleted", BY_TYPE["user_registered"].to_data()))


def test_each_sms_text_is_exactly_what_users_receive() -> None:
    texts = {type_: render_sms(payload, "NGN") for type_, payload in BY_TYPE.items()}
    assert texts == {
        "user_registered": (
            "Welcome to voltpay! Your wallet is ready. Fund it to start paying for electricity."
        ),
        "wallet_funded": (
            "voltpay: your wallet was credited with NGN 500.05. New balance: NGN 500.05."
        ),
        "bill_created": (
            "voltpay: bill of NGN 100.00 created for meter A123456 (Zoë Ọlá). "
            "Pay it before it expires."
        ),
        "payment_completed": (
            "voltpay: payment of NGN 100.00 for meter A123456 succeeded. "
            "Token: {token} (1.47 kWh). Receipt SIM-1."
        ),
        "payment_failed": (
            "voltpay: payment of NGN 100.00 for meter A123456 failed. NGN 100.00 was "
            "refunded to your wallet. Balance: NGN 400.00."
        ),
        "credit_reversed": (
            "voltpay: a credit of NGN 80.00 to your wallet was reversed. New balance: NGN 20.05."
        ),
    }
    reference = sms_reference(uuid.UUID("0123456789abcdef0123456789abcdef"))
    for payload in SAMPLES:
        assert render_sms(payload, "NGN", reference) == f"{texts[payload.type]} Ref 0123456789."


def test_a_wallet_funded_event_without_a_source_was_a_sandbox_credit() -> None:
    funded = BY_TYPE["wallet_funded"]
    data = funded.to_data()
    del data["source"], data["reference"]
    read = WalletFunded.from_data(data)
    assert read.source == "sandbox"
    assert read.reference is None


def test_a_wallet_funded_event_with_an_unknown_source_is_malformed() -> None:
    data = BY_TYPE["wallet_funded"].to_data() | {"source": "gift"}
    with pytest.raises(MalformedEvent):
        WalletFunded.from_data(data)


def test_no_text_holds_what_a_user_typed() -> None:
    """A username is the one free text a user gives: it names no SMS, so
    nobody can make voltpay text a link or a message of theirs."""
    lure = "verify.acct-at.voltpay-help.com"
    registered = UserRegistered(user_id=USER, username=lure, wallet_id=WALLET)
    assert lure not in render_sms(registered, "NGN", "0123456789")


def test_the_token_is_filled_from_the_bill_where_the_text_marks_it() -> None:
    text = render_sms(BY_TYPE["payment_completed"], "NGN")
    assert token_bill(BY_TYPE["payment_completed"]) == BILL.bill_id
    assert token_bill(BY_TYPE["payment_failed"]) is None
    assert fill_token(text, "12345678901234567890") == (
        "voltpay: payment of NGN 100.00 for meter A123456 succeeded. "
        "Token: 1234-5678-9012-3456-7890 (1.47 kWh). Receipt SIM-1."
    )
    # A bill without a token (it never is, once paid) shows no mark either.
    assert TOKEN_MARK not in fill_token(text, None)
    # An old event that still carries a token reads as one without it.
    data = BY_TYPE["payment_completed"].to_data() | {"token": "12345678901234567890"}
    assert PaymentCompleted.from_data(data) == BY_TYPE["payment_completed"]
