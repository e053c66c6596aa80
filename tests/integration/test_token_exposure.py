"""A prepaid token is kept in its bill alone, on SQLite and PostgreSQL: not
in the outbox, the audit log (kept for ever), the notification rows or the
stored idempotent answers; yet the owner reads it in each place the API
shows it, and the SMS carries it. And the INFO log names no phone number
and no SMS text."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.client import PHONE, Api, eventually
from tests.fakes.recording_sms import RecordingSmsSender
from voltpay.bridges.sms import SmsSender
from voltpay.models.tables import (
    AuditRecord,
    Bill,
    IdempotencyRecord,
    Notification,
    OutboxEvent,
)


@pytest.fixture
def sms_sender(sms: RecordingSmsSender) -> SmsSender:
    return sms


async def test_the_token_is_kept_in_its_bill_alone_and_shown_to_its_owner(
    api: Api, sms: RecordingSmsSender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voltpay")
    who = api.who = await api.customer(funds="250.00")
    bill = (await api.bill(who, "100.00")).body
    key = {"Idempotency-Key": "pay-" + uuid.uuid4().hex}
    paid = await api.pay(who, bill["billId"], **key)
    assert paid.status == 200, paid.body
    token = paid.body["token"]
    digits = token.replace("-", "")
    assert (await Bill.get(id=bill["billId"])).token == digits

    async def texted() -> Notification | None:
        return await Notification.get_or_none(event_type="payment_completed", status="sent")

    row = await eventually(texted, what="the token's SMS")
    await eventually(
        lambda: AuditRecord.filter(event_type="payment_completed").exists(),
        what="the audit record",
    )
    # The SMS carried the token, as the owner reads it in /api/notifications.
    [message] = [m for m in sms.sent if m.idempotency_key == str(row.event_id)]
    assert token in message.body and message.to == PHONE
    shown = [n for n in await api.notifications() if n["eventType"] == "payment_completed"]
    assert [n["body"] for n in shown] == [message.body]
    # Stored anywhere else, it is not there, in either form.
    stored = [
        *await OutboxEvent.all().values_list("body", flat=True),
        *await AuditRecord.all().values_list("body", flat=True),
        *await Notification.all().values_list("body", flat=True),
        *await IdempotencyRecord.all().values_list("response_body", flat=True),
    ]
    assert all(digits not in str(body) and token not in str(body) for body in stored)
    # A retry under the same key replays the first answer byte for byte.
    again = await api.pay(who, bill["billId"], **key)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (again.status, again.raw) == (paid.status, paid.raw)
    # INFO names no phone number, no token and no SMS text.
    assert "POST /api/Vend/{billId}/pay -> 200" in caplog.text
    assert PHONE not in caplog.text and PHONE[1:] not in caplog.text
    assert digits not in caplog.text and token not in caplog.text
    assert "Welcome" not in caplog.text
