"""Which bus messages are taken for events of ours: the signature (its
canonical form, its key id, any altered byte refused) and the envelope's
checks (size, control characters, times, versions)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from voltpay.domain.event_signing import (
    MAX_ENVELOPE_BYTES,
    ForgedEvent,
    Keyring,
    SigningKey,
    UnsignedEvent,
    read_event,
)
from voltpay.domain.events import (
    ControlCharacters,
    MalformedEvent,
    OversizedEvent,
    StaleEvent,
    WalletFunded,
    new_event,
    parse_envelope,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=14)
KEY = SigningKey.of(b"k" * 32)
OTHER = SigningKey.of(b"o" * 32)


def funded(**changes: Any) -> dict[str, Any]:
    payload = WalletFunded(
        user_id=uuid.uuid4(),
        wallet_id=uuid.uuid4(),
        transaction_id=uuid.uuid4(),
        amount_minor=2500,
        balance_minor=2500,
        source="sandbox",
    )
    envelope = new_event(payload, NOW).envelope()
    for key, value in changes.items():
        if key in envelope:
            envelope[key] = value
        else:
            envelope["data"][key] = value
    return envelope


def body_of(envelope: dict[str, Any]) -> str:
    return orjson.dumps(envelope).decode()


def read(body: str, signature: str | None, keyring: Keyring | None = None) -> object:
    return read_event(body, signature, keyring or Keyring(KEY), now=NOW, max_age=MAX_AGE)


# -- the signature ------------------------------------------------------------------


def test_the_signature_is_the_hmac_of_the_scheme_the_key_id_and_the_exact_bytes() -> None:
    body = body_of(funded())
    expected = hmac.new(
        b"k" * 32, b"voltpay-event-v1\n" + KEY.key_id.encode() + b"\n" + body.encode(), "sha256"
    ).hexdigest()
    assert Keyring(KEY).sign(body.encode()) == f"v1={KEY.key_id}:{expected}"


def test_the_key_id_is_a_fingerprint_that_names_each_key_apart() -> None:
    assert KEY.key_id == hashlib.sha256(b"voltpay-event-key-id\n" + b"k" * 32).hexdigest()[:16]
    assert KEY.key_id != OTHER.key_id
    assert "k" * 8 not in repr(KEY)  # the secret never shows in a repr
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.of(b"short")


def test_a_signed_event_reads_back_as_it_was_written() -> None:
    envelope = funded()
    body = body_of(envelope)
    event = read(body, Keyring(KEY).sign(body.encode()))
    assert event == parse_envelope(body)


def test_any_altered_byte_is_refused() -> None:
    body = body_of(funded()).encode()
    signature = Keyring(KEY).sign(body)
    for index in range(len(body)):
        altered = bytearray(body)
        altered[index] ^= 0x01
        with pytest.raises(ForgedEvent):
            Keyring(KEY).verify(bytes(altered), signature)
    with pytest.raises(ForgedEvent):
        Keyring(KEY).verify(body + b" ", signature)
    for index in range(len(signature)):
        changed = signature[:index] + chr(ord(signature[index]) ^ 0x01) + signature[index + 1 :]
        with pytest.raises(ForgedEvent):
            Keyring(KEY).verify(body, changed)


def test_a_field_changed_after_signing_is_forged() -> None:
    envelope = funded()
    signature = Keyring(KEY).sign(body_of(envelope).encode())
    envelope["data"]["amount"] = "99999.00"
    with pytest.raises(ForgedEvent):
        read(body_of(envelope), signature)


def test_another_key_is_forged_and_no_signature_is_unsigned() -> None:
    body = body_of(funded())
    with pytest.raises(ForgedEvent, match="no key of ours"):
        read(body, Keyring(OTHER).sign(body.encode()))
    # Another key under our key id: the MAC differs.
    impostor = Keyring(SigningKey(KEY.key_id, b"o" * 32)).sign(body.encode())
    with pytest.raises(ForgedEvent, match="does not match"):
        read(body, impostor)
    for missing in (None, ""):
        with pytest.raises(UnsignedEvent):
            read(body, missing)
    for garbage in ("v1", "v2=" + KEY.key_id + ":00", "v1=:", "nonsense"):
        with pytest.raises(ForgedEvent):
            read(body, garbage)


def test_a_keyring_verifies_with_every_key_it_knows_and_signs_with_one() -> None:
    body = body_of(funded()).encode()
    both = Keyring(OTHER, [KEY])
    both.verify(body, Keyring(KEY).sign(body))
    both.verify(body, Keyring(OTHER).sign(body))
    assert both.sign(body) == Keyring(OTHER).sign(body)
    with pytest.raises(ForgedEvent):
        Keyring(KEY).verify(body, both.sign(body))


# -- the envelope ---------------------------------------------------------------------


def signed(envelope: dict[str, Any] | str) -> tuple[str, str]:
    body = envelope if isinstance(envelope, str) else body_of(envelope)
    return body, Keyring(KEY).sign(body.encode())


@pytest.mark.parametrize(
    ("occurred_at", "why"),
    [
        ("0001-01-01T00:00:00+14:00", MalformedEvent),  # before UTC's first moment
        ("9999-12-31T23:59:59-14:00", MalformedEvent),  # after its last
        ("0001-01-02T00:00:00Z", StaleEvent),
        ((NOW - MAX_AGE - timedelta(seconds=1)).isoformat(), StaleEvent),
        ((NOW + timedelta(minutes=6)).isoformat(), StaleEvent),
    ],
)
def test_occurred_at_must_lie_in_the_window(occurred_at: str, why: type[Exception]) -> None:
    with pytest.raises(why):
        read(*signed(funded(occurredAt=occurred_at)))


def test_the_window_takes_the_clocks_slack_and_the_queues_retention() -> None:
    for moment in (NOW - MAX_AGE + timedelta(seconds=1), NOW + timedelta(minutes=4)):
        read(*signed(funded(occurredAt=moment.isoformat())))


def test_a_time_in_the_payload_past_utcs_range_is_malformed() -> None:
    envelope = {
        **funded(),
        "type": "bill_created",
        "data": {
            "userId": str(uuid.uuid4()),
            "billId": str(uuid.uuid4()),
            "meterNumber": "A123456",
            "customerName": "Ada",
            "amount": "10.00",
            "expiresAt": "0001-01-01T00:00:00+14:00",
        },
    }
    with pytest.raises(MalformedEvent, match="expiresAt"):
        read(*signed(envelope))


@pytest.mark.parametrize("character", ["\x00", "\x07", "\n", "\x1b", "\x7f", "\x85", "\x9f"])
def test_a_control_character_in_any_string_is_refused(character: str) -> None:
    for where in ("username", "amount", "eventId", "extraField"):
        envelope = funded()
        if where == "extraField":
            envelope["data"]["note" + character] = "x"
        elif where == "eventId":
            envelope["eventId"] = envelope["eventId"] + character
        else:
            envelope["data"][where] = "ada" + character
        with pytest.raises(ControlCharacters):
            read(*signed(envelope))


def test_text_beyond_ascii_without_controls_is_kept() -> None:
    envelope = funded()
    envelope["data"]["note"] = "Zoë Ọlá ₦ 🙂"
    read(*signed(envelope))


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[]",
        '"a string"',
        '{"eventId": "\\ud800"}',  # a lone surrogate
        "\ud800",
    ],
)
def test_bodies_that_are_not_json_objects_are_malformed(body: str) -> None:
    signature = Keyring(KEY).sign(body.encode(errors="surrogatepass"))
    with pytest.raises(MalformedEvent) as raised:
        read(body, signature)
    assert raised.value.reason == "malformed"


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 2},
        {"version": "1"},
        {"version": True},
        {"amount": 25},  # a number, not the decimal string
        {"userId": "ada"},
        {"type": "user_deleted"},
    ],
)
def test_wrong_types_and_versions_are_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent) as raised:
        read(*signed(funded(**changes)))
    assert raised.value.reason == "malformed"


def test_a_huge_body_is_refused_before_its_signature_is_checked() -> None:
    envelope = funded(padding="x" * MAX_ENVELOPE_BYTES)
    with pytest.raises(OversizedEvent):
        read(body_of(envelope), None)
    multibyte = funded(padding="₦" * (MAX_ENVELOPE_BYTES // 3))  # fewer chars than bytes allow
    with pytest.raises(OversizedEvent):
        read(*signed(multibyte))


def test_each_refusal_names_its_reason() -> None:
    reasons = {
        cls.reason
        for cls in (
            MalformedEvent,
            ControlCharacters,
            StaleEvent,
            OversizedEvent,
            ForgedEvent,
            UnsignedEvent,
        )
    }
    assert reasons == {"malformed", "control_chars", "stale", "too_large", "forged", "unsigned"}
