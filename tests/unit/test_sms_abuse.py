"""The rules that keep SMS for a number's owner: allowed prefixes, masked
numbers, one-time codes and their limits, and whose client address counts."""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from voltpay.bridges.sms import LogSmsSender, SmsMessage
from voltpay.domain import codes, phones
from voltpay.http.clients import client_address

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LIMITS = codes.CodeLimits(
    resend_seconds=60, per_number_per_day=3, per_client_per_hour=4, per_day=100
)


def test_only_numbers_with_an_allowed_prefix_may_be_texted() -> None:
    assert phones.allowed("+2348012345678", ("+234",))
    assert not phones.allowed("+88212345678", ("+234",))
    assert phones.allowed("+233201234567", ("+234", "+233"))


def test_a_masked_number_keeps_its_country_and_last_two_digits() -> None:
    assert phones.mask("+2348012345678") == "+234********78"
    assert "8012345" not in phones.mask("+2348012345678")
    assert phones.mask("+12345") == "******"


def test_a_code_is_six_digits_kept_only_as_a_salted_hash() -> None:
    code, salt = codes.new_code(), codes.new_salt()
    assert len(code) == 6 and code.isdigit()
    stored = codes.code_hash(code, salt)
    assert code not in stored
    assert codes.code_matches(code, salt, stored)
    assert not codes.code_matches(f"{(int(code) + 1) % 10**6:06d}", salt, stored)
    # The same code under another salt hashes otherwise.
    assert codes.code_hash(code, codes.new_salt()) != stored
    assert code in codes.code_sms(code, 600) and "10 minutes" in codes.code_sms(code, 600)


def _next(
    to_number: list[datetime] = [],  # noqa: B006 - read only
    from_client: list[datetime] = [],  # noqa: B006
    today: int = 0,
    oldest: datetime | None = None,
) -> datetime | None:
    return codes.next_code_at(
        NOW,
        LIMITS,
        to_number=to_number,
        from_client=from_client,
        today=today,
        oldest_today=oldest,
    )


def test_codes_wait_for_the_resend_interval_and_each_limit() -> None:
    assert _next() is None
    ago = [NOW - timedelta(seconds=s) for s in (3000, 2000, 30)]
    # The newest code to the number is 30 s old: 30 s more; and three codes
    # in a day are all it gets until the oldest is a day old.
    assert _next(to_number=ago[2:]) == NOW + timedelta(seconds=30)
    assert _next(to_number=ago) == ago[0] + timedelta(days=1)
    client = [NOW - timedelta(minutes=m) for m in (50, 40, 30, 20)]
    assert _next(from_client=client) == client[0] + timedelta(hours=1)
    assert _next(from_client=client[1:]) is None
    assert _next(today=100, oldest=NOW - timedelta(hours=23)) == NOW + timedelta(hours=1)
    assert _next(today=99, oldest=NOW - timedelta(hours=23)) is None


PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def _request(peer: str, forwarded: str | None = None) -> str:
    headers = CIMultiDict({"X-Forwarded-For": forwarded} if forwarded is not None else {})
    request = make_mocked_request("POST", "/api/auth/register", headers=headers)
    request._transport_peername = (peer, 50000)  # type: ignore[attr-defined]
    return client_address(request.clone(remote=peer), PROXIES)


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    assert _request("127.0.0.2") == "127.0.0.2"
    # A client that writes the header itself is still itself.
    assert _request("127.0.0.2", "198.51.100.7") == "127.0.0.2"
    assert _request("10.1.2.3", "198.51.100.7") == "198.51.100.7"
    # Entries left of the nearest untrusted one are the client's own writing.
    assert _request("10.1.2.3", "203.0.113.9, 198.51.100.7, 10.4.4.4") == "198.51.100.7"
    # Garbage stops the chain at the proxy that passed it on.
    assert _request("10.1.2.3", "198.51.100.7, junk") == "10.1.2.3"
    assert _request("10.1.2.3") == "10.1.2.3"


async def test_the_log_sender_masks_the_number_and_keeps_texts_out_of_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = LogSmsSender()
    caplog.set_level(logging.INFO, logger="voltpay.sms")
    await sender.send(SmsMessage("+2348012345678", "Token: 1234-5678", "e1"))
    assert "+234********78" in caplog.text
    assert "8012345678" not in caplog.text and "Token" not in caplog.text
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="voltpay.sms")
    await sender.send(SmsMessage("+2348012345678", "Token: 1234-5678", "e2"))
    assert "Token: 1234-5678" in caplog.text
    caplog.clear()
    await sender.send(SmsMessage("+2348012345678", "Your code is 123456", "c1", secret=True))
    assert "123456" not in caplog.text
