"""The SMS senders: the real twilio client against a fake Twilio server."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from tests.fakes.twilio_server import FakeTwilioServer, ScriptedResponse, twilio_error
from voltpay.bridges.sms import (
    LogSmsSender,
    SmsError,
    SmsMessage,
    SmsPermanentError,
    SmsTemporaryError,
    TwilioSmsSender,
    build_sms_sender,
)
from voltpay.config.settings import TwilioSettings
from voltpay.domain.phones import mask

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "tok-5e3c7a9f1d2b4e6a8c0f"
FROM_NUMBER = "+15005550006"

MESSAGE = SmsMessage(
    to="+2348031234567",
    body="Payment received. Token: 1234-5678-9012-3456-7890",
    idempotency_key="8f1d0c3e-7a52-4a8e-9d7b-2f6c1e0a9b44",
)

SenderFactory = Callable[..., TwilioSmsSender]


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as server:
        yield server


@pytest.fixture
async def make_sender(fake: FakeTwilioServer) -> AsyncIterator[SenderFactory]:
    senders: list[TwilioSmsSender] = []

    def make(**overrides: object) -> TwilioSmsSender:
        options: dict[str, object] = {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM_NUMBER,
            "base_url": fake.base_url,
            "max_attempts": 4,
            "base_backoff_seconds": 0.001,
            "max_backoff_seconds": 0.01,
            "timeout_seconds": 5.0,
        }
        options.update(overrides)
        sender = TwilioSmsSender(**options)  # type: ignore[arg-type]
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        await sender.close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_twilio_send_returns_the_sid_and_posts_to_from_and_body(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    receipt = await make_sender().send(MESSAGE)

    assert re.fullmatch(r"SM[0-9a-f]{32}", receipt.provider_message_id)
    assert receipt.sender == "twilio"
    assert [m["sid"] for m in fake.messages] == [receipt.provider_message_id]
    [request] = fake.requests
    assert request.account_sid == ACCOUNT_SID
    assert request.auth_ok
    assert (request.to, request.from_, request.body) == (MESSAGE.to, FROM_NUMBER, MESSAGE.body)
    # The event id stays on our side: Twilio would reject unknown parameters.
    assert set(request.form) == {"To", "From", "Body"}
    assert request.answered_status == 201


async def test_a_500_then_success_is_retried_and_delivered_once(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    fake.script([500, 201])

    receipt = await make_sender().send(MESSAGE)

    assert [r.answered_status for r in fake.requests] == [500, 201]
    assert fake.created_count == 1
    assert fake.messages[0]["sid"] == receipt.provider_message_id


async def test_a_500_after_twilio_took_the_message_is_found_and_not_sent_again(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    fake.script([ScriptedResponse(status=500, accepted=True)])

    receipt = await make_sender().send(MESSAGE)

    assert fake.created_count == 1, "one SMS, not a second one on the retry"
    assert [r.answered_status for r in fake.requests] == [500]
    assert fake.list_requests == 1
    assert receipt.provider_message_id == fake.messages[0]["sid"]


async def test_find_reads_the_numbers_messages_page_by_page_back_to_since(
    fake: FakeTwilioServer, make_sender: SenderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voltpay.bridges import sms as sms_bridge

    monkeypatch.setattr(sms_bridge, "FIND_PAGE_SIZE", 50)  # pages of 50, not 1,000
    sender = make_sender()
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = await sender.send(MESSAGE)
    for n in range(120):  # the same number's later messages: three pages of 50
        await sender.send(SmsMessage(MESSAGE.to, f"another text {n}", str(n)))
    await sender.send(SmsMessage("+2348030000000", MESSAGE.body, "elsewhere"))

    found = await sender.find(MESSAGE, before)
    assert found is not None and found.provider_message_id == first.provider_message_id
    assert fake.list_requests == 3
    assert await sender.find(SmsMessage(MESSAGE.to, "never sent", "x"), before) is None
    # Nothing older than ``since`` counts.
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await sender.find(MESSAGE, later) is None


async def test_a_429_with_retry_after_is_retried(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    fake.script([ScriptedResponse(status=429, headers={"Retry-After": "0"}), 201])

    receipt = await make_sender().send(MESSAGE)

    assert [r.answered_status for r in fake.requests] == [429, 201]
    assert fake.messages[0]["sid"] == receipt.provider_message_id


async def test_a_retry_after_beyond_the_backoff_cap_leaves_it_for_redelivery(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    fake.script([ScriptedResponse(status=429, headers={"Retry-After": "120"})])

    with pytest.raises(SmsTemporaryError) as caught:
        await make_sender(max_backoff_seconds=8.0).send(MESSAGE)

    assert caught.value.status == 429
    assert caught.value.code == 20429
    assert len(fake.requests) == 1


async def test_a_400_is_permanent_after_exactly_one_request(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    fake.script(
        [
            ScriptedResponse(
                status=400,
                body=twilio_error(400, 21211, "The 'To' number +2340 is not a valid phone number."),
            )
        ]
    )

    with pytest.raises(SmsPermanentError) as caught:
        await make_sender().send(MESSAGE)

    assert caught.value.permanent is True
    assert (caught.value.status, caught.value.code) == (400, 21211)
    assert "not a valid phone number" in str(caught.value)
    assert len(fake.requests) == 1
    assert fake.created_count == 0


async def test_an_invalid_number_rejected_by_twilio_is_permanent(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    with pytest.raises(SmsPermanentError) as caught:
        await make_sender().send(SmsMessage(to="08031234567", body="hi", idempotency_key="k"))

    assert caught.value.code == 21211
    assert len(fake.requests) == 1


async def test_500_forever_gives_a_temporary_error_after_max_attempts(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    fake.script([500] * 10)

    with pytest.raises(SmsTemporaryError) as caught:
        await make_sender(max_attempts=3).send(MESSAGE)

    assert caught.value.permanent is False
    assert caught.value.status == 500
    assert len(fake.requests) == 3
    assert fake.created_count == 0


async def test_a_wrong_auth_token_is_permanent(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    with pytest.raises(SmsPermanentError) as caught:
        await make_sender(auth_token="not-the-token").send(MESSAGE)

    assert (caught.value.status, caught.value.code) == (401, 20003)
    [request] = fake.requests
    assert not request.auth_ok
    assert fake.created_count == 0


async def test_an_unreachable_twilio_is_temporary(make_sender: SenderFactory) -> None:
    sender = make_sender(base_url=f"http://127.0.0.1:{closed_port()}", max_attempts=2)

    with pytest.raises(SmsTemporaryError) as caught:
        await sender.send(MESSAGE)

    assert "unreachable" in str(caught.value)
    assert "2 attempt" in str(caught.value)


async def test_a_slow_twilio_times_out_and_is_retried(
    fake: FakeTwilioServer, make_sender: SenderFactory
) -> None:
    # The stock async client drops its timeout; this fails if ours is ignored.
    fake.script([ScriptedResponse(status=201, delay_seconds=5.0), 201])
    started = time.monotonic()

    receipt = await make_sender(timeout_seconds=0.1).send(MESSAGE)

    assert time.monotonic() - started < 2.0
    # Only the retry has been answered; the first request is still waiting.
    assert [m["sid"] for m in fake.messages] == [receipt.provider_message_id]


async def test_a_closed_sender_refuses_to_send(make_sender: SenderFactory) -> None:
    sender = make_sender()
    await sender.send(MESSAGE)
    await sender.close()

    with pytest.raises(SmsTemporaryError):
        await sender.send(MESSAGE)


async def test_the_auth_token_never_reaches_the_log(
    fake: FakeTwilioServer, make_sender: SenderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script([500, 201, 400])
    sender = make_sender()

    await sender.send(MESSAGE)
    with pytest.raises(SmsError) as caught:
        await sender.send(MESSAGE)

    assert caplog.records, "expected the send to log something at DEBUG"
    assert any(r.name == "voltpay.sms.http" for r in caplog.records)
    assert AUTH_TOKEN not in caplog.text
    assert all(AUTH_TOKEN not in r.getMessage() for r in caplog.records)
    assert AUTH_TOKEN not in str(caught.value)


async def test_the_log_sender_logs_the_number_masked_and_no_text_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voltpay.sms")
    sender = LogSmsSender()

    receipt = await sender.send(MESSAGE)
    await sender.close()

    assert receipt.sender == "log"
    assert re.fullmatch(r"log-[0-9a-f-]{36}", receipt.provider_message_id)
    [record] = [r for r in caplog.records if r.name == "voltpay.sms"]
    assert record.levelno == logging.INFO
    assert mask(MESSAGE.to) in record.getMessage()
    assert MESSAGE.to not in record.getMessage()
    assert MESSAGE.body not in record.getMessage()
    assert MESSAGE.idempotency_key in record.getMessage()


async def test_build_sms_sender_picks_twilio_only_when_configured() -> None:
    unconfigured = build_sms_sender(TwilioSettings())
    configured = build_sms_sender(
        TwilioSettings(
            account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN), from_number=FROM_NUMBER
        )
    )
    try:
        assert isinstance(unconfigured, LogSmsSender)
        assert isinstance(configured, TwilioSmsSender)
        assert configured.name == "twilio"
    finally:
        await unconfigured.close()
        await configured.close()


async def test_build_sms_sender_sends_to_the_configured_base_url(
    fake: FakeTwilioServer,
) -> None:
    sender = build_sms_sender(
        TwilioSettings(
            account_sid=ACCOUNT_SID,
            auth_token=SecretStr(AUTH_TOKEN),
            from_number=FROM_NUMBER,
            base_url=fake.base_url,
        )
    )
    try:
        receipt = await sender.send(MESSAGE)
    finally:
        await sender.close()

    assert fake.messages[0]["sid"] == receipt.provider_message_id
