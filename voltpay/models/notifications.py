"""The consumer side: inbox (what was received), notifications (what was
sent) and the append-only audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q

from voltpay.models import sql
from voltpay.models.tables import Notification

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"


def _db() -> BaseDBAsyncClient:
    conn: BaseDBAsyncClient = connections.get("default")
    return conn


async def record_inbox(event_id: uuid.UUID, event_type: str) -> bool:
    """True the first time this event id is seen."""
    inserted = await sql.execute(
        _db(),
        "INSERT INTO inbox (event_id, event_type, received_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (event_id) DO NOTHING",
        event_id,
        event_type,
        datetime.now(UTC),
    )
    return inserted == 1


async def phone_of(user_id: uuid.UUID) -> str | None:
    found = await sql.rows(_db(), "SELECT phone_number FROM users WHERE id = $1", user_id)
    return str(found[0]["phone_number"]) if found else None


async def create_claimed(
    event_id: uuid.UUID,
    event_type: str,
    user_id: uuid.UUID | None,
    to: str,
    body: str,
    lease_seconds: float,
) -> uuid.UUID | None:
    """The notification row, created already claimed by us; None if it exists."""
    now = datetime.now(UTC)
    created = await sql.rows(
        _db(),
        'INSERT INTO notifications (id, event_id, event_type, user_id, "to", body, status, '
        "attempts, claimed_until, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING id",
        uuid.uuid4(),
        event_id,
        event_type,
        user_id,
        to,
        body,
        QUEUED,
        1,
        now + timedelta(seconds=lease_seconds),
        now,
    )
    return uuid.UUID(str(created[0]["id"])) if created else None


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
    await sql.execute(
        _db(),
        "UPDATE notifications SET status = $1, sender = $2, provider_message_id = $3, "
        "sent_at = $4, claimed_until = NULL, error = NULL WHERE id = $5",
        SENT,
        sender,
        provider_message_id[:64],
        datetime.now(UTC),
        notification_id,
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
    """Append once per event id; False for a duplicate."""
    inserted = await sql.execute(
        _db(),
        "INSERT INTO audit_log (event_id, event_type, occurred_at, recorded_at, body) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        event_id,
        event_type,
        occurred_at,
        datetime.now(UTC),
        body,
    )
    return inserted == 1
