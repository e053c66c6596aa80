"""One-time codes that prove a phone number is its user's.

Only a salted hash of a code is kept (the code itself travels once, by SMS),
checked in constant time. A code expires, allows a bounded number of wrong
guesses, and a number, a client and the whole service get a bounded number of
codes (NIST SP 800-63B 5.1.3; Twilio's guidance against SMS pumping).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

CODE_DIGITS = 6


def new_code() -> str:
    """Six random digits, from the system's cryptographic source."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def new_salt() -> str:
    return secrets.token_hex(16)


def code_hash(code: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def code_matches(code: str, salt: str, stored_hash: str) -> bool:
    return hmac.compare_digest(code_hash(code, salt), stored_hash)


def code_sms(code: str, ttl_seconds: int) -> str:
    """The code's text: ours alone, with nothing a user typed in it."""
    return (
        f"Your voltpay code is {code}. It expires in {max(1, ttl_seconds // 60)} minutes. "
        "voltpay never asks for it by phone or email."
    )


@dataclass(frozen=True)
class CodeLimits:
    """How many codes may go out; see SmsSettings."""

    resend_seconds: int
    per_number_per_day: int
    per_client_per_hour: int
    per_day: int


DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def next_code_at(
    now: datetime,
    limits: CodeLimits,
    *,
    to_number: list[datetime],
    from_client: list[datetime],
    today: int,
    oldest_today: datetime | None,
) -> datetime | None:
    """When the next code may be issued, given the times of the codes issued
    to the number in the last day and to the client in the last hour (oldest
    first) and the count and oldest of all codes in the last day; None when
    it may be issued now."""
    waits: list[datetime] = []
    if to_number and to_number[-1] + timedelta(seconds=limits.resend_seconds) > now:
        waits.append(to_number[-1] + timedelta(seconds=limits.resend_seconds))
    if len(to_number) >= limits.per_number_per_day:
        waits.append(to_number[-limits.per_number_per_day] + DAY)
    if len(from_client) >= limits.per_client_per_hour:
        waits.append(from_client[-limits.per_client_per_hour] + HOUR)
    if today >= limits.per_day and oldest_today is not None:
        waits.append(oldest_today + DAY)
    return max(waits) if waits else None
