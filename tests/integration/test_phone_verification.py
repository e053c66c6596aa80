"""Phone verification by one-time code, through the real Twilio client
against a fake Twilio, on SQLite and PostgreSQL: the code reaches the phone
and nowhere else, guesses are bounded, codes expire, and nothing but the
code goes to a number that is not verified yet."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.client import PHONE, Api, eventually
from tests.conftest import make_settings, running_daemon
from tests.fakes.twilio_server import FakeTwilioServer
from tests.integration.test_api_contract import assert_problem
from voltpay.bridges.electricity import SimulatedProvider
from voltpay.models.tables import AuditRecord, Notification, OutboxEvent, PhoneCode, User

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "fake-auth-token"
CODE = re.compile(r"Your voltpay code is (\d{6})\.")


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def settings_overrides(twilio: FakeTwilioServer) -> dict[str, dict[str, Any]]:
    return {
        "twilio": {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": "+15005550006",
            "base_url": twilio.base_url,
        },
        "signup": {"verify_phone": True},
        "sms": {"code_max_guesses": 3},
    }


def codes_to(twilio: FakeTwilioServer, phone: str) -> list[str]:
    return [
        found.group(1)
        for message in twilio.messages
        if message["to"] == phone and (found := CODE.search(str(message["body"])))
    ]


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def test_the_code_proves_the_number_and_is_readable_only_by_sms(
    api: Api, twilio: FakeTwilioServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="voltpay")
    await api.register_and_login()
    [code] = codes_to(twilio, PHONE)
    me = await api.expect(200, "GET", "/api/me")
    assert me["phoneVerified"] is False
    assert_problem(
        await api.call("POST", "/api/auth/verify-phone", json={"code": _wrong(code)}),
        422,
        "invalid_code",
    )
    assert_problem(
        await api.call("POST", "/api/auth/verify-phone", json={"code": "12a456"}),
        422,
        "invalid_code",
    )
    verified = await api.expect(200, "POST", "/api/auth/verify-phone", json={"code": code})
    assert verified == {"phoneVerified": True}
    assert (await api.expect(200, "GET", "/api/me"))["phoneVerified"] is True
    again = await api.call("POST", "/api/auth/verify-phone", json={"code": code})
    assert_problem(again, 409, "phone_already_verified")
    # The code went to the phone and is nowhere a reader of the API, the
    # logs or the database finds it.
    assert all(code not in str(n) for n in await api.notifications())
    assert "sms sent via twilio" in caplog.text
    assert code not in caplog.text and PHONE not in caplog.text
    stored = await PhoneCode.all().values_list("code_hash", "salt")
    assert stored and all(code not in "".join(row) for row in stored)
    audited = await AuditRecord.all().values_list("body", flat=True)
    outbox = await OutboxEvent.all().values_list("body", flat=True)
    assert all(code not in body for body in [*audited, *outbox])


async def test_nothing_but_the_code_goes_to_a_number_not_yet_verified(
    api: Api, twilio: FakeTwilioServer
) -> None:
    await api.register_and_login()
    await api.add_funds("100.00")

    async def withheld() -> list[dict[str, Any]] | None:
        items = await api.notifications()
        return items if len(items) == 2 and all(n["status"] == "failed" for n in items) else None

    await eventually(withheld, what="the welcome and funding SMS withheld")
    assert len(twilio.messages) == 1  # the code
    [code] = codes_to(twilio, PHONE)
    await api.expect(200, "POST", "/api/auth/verify-phone", json={"code": code})
    await api.add_funds("5.00")

    async def funded_sms() -> bool:
        return any("NGN 5.00" in str(m["body"]) for m in twilio.messages)

    await eventually(funded_sms, what="the SMS after verification")


async def test_a_code_allows_a_bounded_number_of_guesses(
    api: Api, twilio: FakeTwilioServer
) -> None:
    await api.register_and_login()
    [code] = codes_to(twilio, PHONE)
    for _ in range(3):
        reply = await api.call("POST", "/api/auth/verify-phone", json={"code": _wrong(code)})
        assert_problem(reply, 422, "invalid_code")
    # Spent: even the right code is refused now.
    spent = await api.call("POST", "/api/auth/verify-phone", json={"code": code})
    assert_problem(spent, 429, "too_many_attempts")
    assert int(spent.headers["Retry-After"]) >= 1
    assert (await api.expect(200, "GET", "/api/me"))["phoneVerified"] is False


async def test_a_code_expires_and_a_new_one_replaces_it(api: Api, twilio: FakeTwilioServer) -> None:
    await api.register_and_login()
    [old] = codes_to(twilio, PHONE)
    # Too soon for another code: the resend interval.
    soon = await api.call("POST", "/api/auth/verify-phone/resend")
    assert_problem(soon, 429, "too_many_codes")
    assert 1 <= int(soon.headers["Retry-After"]) <= 60
    # Ten minutes later (the code's row aged in place of waiting).
    earlier = datetime.now(UTC) - timedelta(minutes=11)
    await PhoneCode.all().update(created_at=earlier, expires_at=earlier + timedelta(minutes=10))
    expired = await api.call("POST", "/api/auth/verify-phone", json={"code": old})
    assert_problem(expired, 410, "code_expired")
    reply = await api.call("POST", "/api/auth/verify-phone/resend")
    assert reply.status == 202, reply.body
    old_again, new = codes_to(twilio, PHONE)
    assert old_again == old
    await api.expect(200, "POST", "/api/auth/verify-phone", json={"code": new})


async def test_numbers_outside_the_allowed_prefixes_are_refused_and_nothing_is_made(
    api: Api, twilio: FakeTwilioServer
) -> None:
    for phone in ("+88212345678", "+447700900123"):
        reply = await api.call(
            "POST",
            "/api/auth/register",
            json={"username": "pump", "password": "long-enough", "phoneNumber": phone},
        )
        assert_problem(reply, 422, "phone_not_supported")
    assert await User.all().count() == 0
    assert twilio.messages == []


async def test_the_username_is_in_no_sms(api: Api, twilio: FakeTwilioServer) -> None:
    lure = "verify.acct-at.voltpay-help.com"
    await api.register_and_login(username=lure)
    await eventually(
        lambda: Notification.filter(event_type="user_registered").exists(),
        what="the welcome notification",
    )
    assert all(lure not in str(m["body"]) for m in twilio.messages)
    assert all(lure not in n["body"] for n in await api.notifications())


async def test_verification_required_with_no_sms_provider_is_warned_at_start(
    database_url: str,
    moto_server_url: str,
    provider: SimulatedProvider,
    twilio: FakeTwilioServer,
    settings_overrides: dict[str, dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="voltpay.daemon.pipeline")

    def warned() -> bool:
        return any("no SMS provider" in r.getMessage() for r in caplog.records)

    codes_go_nowhere = make_settings(database_url, moto_server_url, signup={"verify_phone": True})
    async with running_daemon(codes_go_nowhere, provider=provider):
        pass
    assert warned()

    caplog.clear()
    with_twilio = make_settings(database_url, moto_server_url, **settings_overrides)
    async with running_daemon(with_twilio, provider=provider):
        pass
    assert not warned()
