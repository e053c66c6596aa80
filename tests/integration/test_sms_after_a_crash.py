"""A daemon died holding a notification it may or may not have texted: the
daemon that takes the event over asks Twilio before texting, so the customer
gets the SMS once either way. Over the real SNS/SQS API and the real twilio
client against a fake Twilio server; on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.transactions import in_transaction

from tests.client import eventually
from tests.conftest import make_settings, running_daemon
from tests.fakes.twilio_server import FakeTwilioServer
from voltpay.bridges.sms import SmsMessage, TwilioSmsSender
from voltpay.domain.events import WalletFunded
from voltpay.domain.sms import render_sms, sms_reference
from voltpay.models import leases
from voltpay.models.database import close_database, open_database
from voltpay.models.outbox import record_event
from voltpay.models.tables import Notification, User

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "tok-5e3c7a9f1d2b4e6a8c0f"
FROM_NUMBER = "+15005550006"
PHONE = "+2348077777777"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as server:
        yield server


def _sender(twilio: FakeTwilioServer) -> TwilioSmsSender:
    return TwilioSmsSender(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=FROM_NUMBER,
        base_url=twilio.base_url,
        base_backoff_seconds=0.001,
        max_backoff_seconds=0.01,
    )


async def _left_behind(database_url: str) -> tuple[uuid.UUID, str]:
    """What a daemon killed mid-send leaves: a committed wallet_funded event
    (not yet published) and its notification, leased by the dead daemon after
    one attempt. Returns the event id and the SMS text."""
    await open_database(database_url, migrate_first=False)
    try:
        now = datetime.now(UTC)
        user = await User.create(
            id=uuid.uuid4(),
            username=f"u{uuid.uuid4().hex[:10]}",
            password_hash="x",
            phone_number=PHONE,
            created_at=now,
        )
        funded = WalletFunded(
            user_id=user.id,
            wallet_id=uuid.uuid4(),
            transaction_id=uuid.uuid4(),
            amount_minor=50000,
            balance_minor=50000,
            source="sandbox",
        )
        async with in_transaction() as conn:
            event = await record_event(conn, funded, now)
        body = render_sms(funded, "NGN", sms_reference(event.event_id))
        dead = uuid.uuid4()
        await leases.register(dead)
        await leases.heartbeat(dead, now - timedelta(minutes=1))
        await Notification.create(
            id=uuid.uuid4(),
            event_id=event.event_id,
            event_type="wallet_funded",
            user_id=user.id,
            to=PHONE,
            body=body,
            status="queued",
            attempts=1,
            claimed_until=now + timedelta(hours=1),
            claimed_by=dead,
            created_at=now,
        )
        return event.event_id, body
    finally:
        await close_database()


async def _texted(event_id: uuid.UUID) -> Notification | None:
    notification = await Notification.get(event_id=event_id)
    return notification if notification.status == "sent" else None


@pytest.mark.parametrize("reached_twilio", [True, False], ids=["sent", "not-sent"])
async def test_the_dead_daemons_sms_goes_out_once(
    database_url: str, moto_server_url: str, twilio: FakeTwilioServer, reached_twilio: bool
) -> None:
    event_id, body = await _left_behind(database_url)
    earlier = None
    if reached_twilio:  # the send reached Twilio; "sent" was never recorded
        sender = _sender(twilio)
        earlier = await sender.send(SmsMessage(PHONE, body, str(event_id)))
        await sender.close()

    settings = make_settings(database_url, moto_server_url)
    async with running_daemon(settings, sms_sender=_sender(twilio)) as daemon:
        notification = await eventually(lambda: _texted(event_id), timeout=15)
        found = daemon.metrics.sample("voltpay_sms_found_sent_total", {"sender": "twilio"})

    assert [m["body"] for m in twilio.messages] == [body]
    assert notification.provider_message_id == twilio.messages[0]["sid"]
    assert notification.attempts == 2
    if earlier is not None:
        assert notification.provider_message_id == earlier.provider_message_id
        assert found == 1
    else:
        assert not found
