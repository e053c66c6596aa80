"""Funding intents: what the gateway's verify answer means for one intent,
and how long the reconciler waits before asking again. No I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class FundingStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"


class Step(enum.Enum):
    CREDIT = "credit"
    REVIEW = "review"
    FAIL = "fail"
    EXPIRE = "expire"
    WAIT = "wait"


@dataclass(frozen=True)
class Intent:
    reference: str
    amount_minor: int
    currency: str
    expires_at: datetime


@dataclass(frozen=True)
class Answer:
    """The gateway's verify answer; None for a reference it does not know."""

    reference: str
    status: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Decision:
    step: Step
    why: str = ""


def decide(intent: Intent, answer: Answer | None, now: datetime) -> Decision:
    """What to do with a pending intent given the gateway's verify answer.

    A success is credited only when the gateway's reference, amount and
    currency are the intent's; a success for anything else is a payment that
    cannot be matched to what the customer asked for, for a person to look
    at. A checkout that never started, or was abandoned, expires once the
    intent is past its expiry; anything still under way is asked again later.
    """
    if answer is None:
        return Decision(Step.EXPIRE if now >= intent.expires_at else Step.WAIT, "not found")
    if answer.status == "success":
        if answer.reference != intent.reference:
            return Decision(Step.REVIEW, "the gateway verified another reference")
        if answer.currency != intent.currency:
            return Decision(
                Step.REVIEW, f"paid in {answer.currency[:8]!r}, expected {intent.currency}"
            )
        if answer.amount_minor != intent.amount_minor:
            return Decision(
                Step.REVIEW,
                f"paid {answer.amount_minor} minor units, expected {intent.amount_minor}",
            )
        return Decision(Step.CREDIT)
    if answer.status in ("failed", "reversed"):
        return Decision(Step.FAIL, answer.status)
    if answer.status == "abandoned" and now >= intent.expires_at:
        return Decision(Step.EXPIRE, "abandoned")
    return Decision(Step.WAIT, answer.status[:32])


def next_wait(checks: int, first_seconds: float, longest_seconds: float) -> float:
    """Seconds before the reconciler asks about an intent it asked about
    ``checks`` times: doubling from the first wait, never past the longest."""
    return float(min(first_seconds * 2 ** min(checks, 32), longest_seconds))
