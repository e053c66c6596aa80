"""The consumer side: inbox (what was received), notifications (what was
sent) and the append-only audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q

from voltpay.models.tables import AuditRecord, InboxEvent, Notification, User

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"


async def record_inbox(event_id: uuid.UUID, event_type: str) -> bool:
    """True the first time this event id is seen."""
    try:
        await InboxEvent.create(
            event_id=event_id, event_type=event_type, received_at=datetime.now(UTC)
        )
    except IntegrityError:
        return False
    return True


async def phone_of(user_id: uuid.UUID) -> str | None:
    phones = await User.filter(id=user_id).values_list("phone_number", flat=True)
    return str(phones[0]) if phones else None


async def ensure_notification(
    event_id: uuid.UUID, event_type: str, user_id: uuid.UUID | None, to: str, body: str
) -> Notification:
    existing = await Notification.get_or_none(event_id=event_id)
    if existing is not None:
        return existing
    try:
        return await Notification.create(
            id=uuid.uuid4(),
            event_id=event_id,
            event_type=event_type,
            user_id=user_id,
            to=to,
            body=body,
            status=QUEUED,
            created_at=datetime.now(UTC),
        )
    except IntegrityError:
        return await Notification.get(event_id=event_id)


async def claim(notification_id: uuid.UUID, lease_seconds: float) -> bool:
    """Take the right to send; False while someone else holds it or it is done."""
    now = datetime.now(UTC)
    taken = (
        await Notification.filter(id=notification_id, status=QUEUED)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + timedelta(seconds=lease_seconds), attempts=F("attempts") + 1)
    )
    return taken == 1


async def mark_sent(notification_id: uuid.UUID, sender: str, provider_message_id: str) -> None:
    await Notification.filter(id=notification_id).update(
        status=SENT,
        sender=sender,
        provider_message_id=provider_message_id[:64],
        sent_at=datetime.now(UTC),
        claimed_until=None,
        error=None,
    )


async def mark_failed(notification_id: uuid.UUID, sender: str, error: str) -> None:
    await Notification.filter(id=notification_id).update(
        status=FAILED, sender=sender, error=error[:255], claimed_until=None
    )


async def release(notification_id: uuid.UUID, error: str) -> None:
    await Notification.filter(id=notification_id, status=QUEUED).update(
        claimed_until=None, error=error[:255]
    )


async def append_audit(
    event_id: uuid.UUID, event_type: str, occurred_at: datetime, body: str
) -> bool:
    try:
        await AuditRecord.create(
            event_id=event_id,
            event_type=event_type,
            occurred_at=occurred_at,
            recorded_at=datetime.now(UTC),
            body=body,
        )
    except IntegrityError:
        return False
    return True
