"""What a verify answer means for a funding intent, and the webhook's signature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voltpay.bridges.paystack import signature, signature_matches
from voltpay.domain.fundings import Answer, Intent, Step, decide, next_wait

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTENT = Intent("vp_abc", 25000, "NGN", NOW + timedelta(hours=1))


def answer(**changes: object) -> Answer:
    fields: dict[str, object] = {
        "reference": "vp_abc",
        "status": "success",
        "amount_minor": 25000,
        "currency": "NGN",
    }
    fields.update(changes)
    return Answer(**fields)  # type: ignore[arg-type]


def test_a_matching_success_is_credited() -> None:
    assert decide(INTENT, answer(), NOW).step is Step.CREDIT


@pytest.mark.parametrize(
    "changes",
    [{"amount_minor": 24999}, {"amount_minor": 25001}, {"currency": "USD"}, {"reference": "vp_x"}],
)
def test_a_success_that_does_not_match_goes_to_review(changes: dict[str, object]) -> None:
    assert decide(INTENT, answer(**changes), NOW).step is Step.REVIEW


@pytest.mark.parametrize(
    ("status", "now", "step"),
    [
        ("failed", NOW, Step.FAIL),
        ("abandoned", NOW, Step.WAIT),
        ("abandoned", NOW + timedelta(hours=2), Step.EXPIRE),
        ("ongoing", NOW + timedelta(hours=2), Step.WAIT),
        ("pending", NOW, Step.WAIT),
    ],
)
def test_other_statuses(status: str, now: datetime, step: Step) -> None:
    assert decide(INTENT, answer(status=status), now).step is step


def test_an_unknown_reference_waits_then_expires() -> None:
    assert decide(INTENT, None, NOW).step is Step.WAIT
    assert decide(INTENT, None, INTENT.expires_at).step is Step.EXPIRE


def test_the_reconciler_backs_off_to_its_longest_wait() -> None:
    waits = [next_wait(n, 300, 3600) for n in range(6)]
    assert waits == [300, 600, 1200, 2400, 3600, 3600]
    assert next_wait(10_000, 300, 3600) == 3600


def test_the_signature_is_hex_hmac_sha512_of_the_raw_body() -> None:
    body = b'{"event":"charge.success"}'
    # Computed independently: hmac.new(b"sk_test", body, hashlib.sha512).hexdigest()
    import hashlib
    import hmac

    assert signature("sk_test", body) == hmac.new(b"sk_test", body, hashlib.sha512).hexdigest()
    good = signature("sk_test", body)
    assert signature_matches("sk_test", body, good)
    assert signature_matches("sk_test", body, good.upper())
    assert not signature_matches("sk_test", body + b" ", good)
    assert not signature_matches("sk_other", body, good)
    assert not signature_matches("sk_test", body, None)
    assert not signature_matches("sk_test", body, "")
    assert not signature_matches("", body, signature("", body))
    assert not signature_matches("sk_test", body, "é" * 128)
