"""Receiving a batch of events: the inbox rows, and the notification rows
created already claimed, with the owner's phone number; on both databases
(one statement on PostgreSQL, three on SQLite), the same rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from voltpay.models import notifications as store
from voltpay.models.leases import Lease
from voltpay.models.tables import InboxEvent, Notification, User


async def _user(phone: str) -> uuid.UUID:
    user = await User.create(
        id=uuid.uuid4(),
        username=f"u{uuid.uuid4().hex[:12]}",
        password_hash="x",
        phone_number=phone,
        created_at=datetime.now(UTC),
    )
    return uuid.UUID(str(user.id))


def _received(user_id: uuid.UUID | None, body: str | None) -> store.Received:
    return store.Received(uuid.uuid4(), "wallet_funded", user_id, body)


async def test_a_batch_is_noted_once_and_claimed_once_with_each_owners_phone(
    instance: uuid.UUID,
) -> None:
    ada = await _user("+2348011111111")
    silent = await _user("")
    texted = _received(ada, "Your wallet was credited.")
    no_phone = _received(silent, "Nobody to text.")
    unknown_user = _received(uuid.uuid4(), "No such user.")
    no_user = _received(None, "No user at all.")
    no_sms = _received(ada, None)  # an event with no SMS: noted, nothing to send
    batch = [texted, no_phone, unknown_user, no_user, no_sms]

    before = datetime.now(UTC)
    claimed = await store.receive(batch, Lease(instance, 30))

    assert set(claimed) == {e.event_id for e in batch if e.body is not None}
    assert claimed[texted.event_id].to == "+2348011111111"
    for event in (no_phone, unknown_user, no_user):
        assert claimed[event.event_id].to == ""
    for event in batch:
        assert await InboxEvent.filter(event_id=event.event_id).count() == 1
    assert not await Notification.filter(event_id=no_sms.event_id).exists()
    for event_id, made in claimed.items():
        row = await Notification.get(id=made.notification_id)
        event = next(e for e in batch if e.event_id == event_id)
        assert (row.event_id, row.event_type, row.user_id) == (
            event_id,
            event.event_type,
            event.user_id,
        )
        assert (row.to, row.body, row.status, row.attempts) == (
            made.to,
            event.body,
            store.QUEUED,
            1,
        )
        assert row.claimed_until is not None
        assert before + timedelta(seconds=29) < row.claimed_until
        assert row.claimed_until < datetime.now(UTC) + timedelta(seconds=31)

    # A redelivery of the same events (and one new) claims only the new one.
    fresh = _received(ada, "Another credit.")
    again = await store.receive([*batch, fresh], Lease(instance, 30))
    assert set(again) == {fresh.event_id}
    assert again[fresh.event_id].to == "+2348011111111"
    assert await InboxEvent.filter(event_id__in=[e.event_id for e in batch]).count() == len(batch)
    assert await Notification.filter(event_id__in=[e.event_id for e in batch]).count() == 4


async def test_a_batch_with_nothing_to_send_is_only_noted(instance: uuid.UUID) -> None:
    quiet = [_received(None, None), _received(uuid.uuid4(), None)]
    assert await store.receive(quiet, Lease(instance, 30)) == {}
    assert await store.receive([], Lease(instance, 30)) == {}
    assert await InboxEvent.filter(event_id__in=[e.event_id for e in quiet]).count() == 2
    assert not await Notification.filter(event_id__in=[e.event_id for e in quiet]).exists()
