"""The transactional outbox: events written in the same transaction as the
state change they describe, published later by the relay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q, Subquery
from tortoise.transactions import in_transaction

from voltpay.domain.events import Event, EventType, new_event
from voltpay.models.tables import InboxEvent, OutboxEvent


async def record_event(
    conn: BaseDBAsyncClient, type_: EventType, data: dict[str, Any], now: datetime
) -> Event:
    event = new_event(type_, data, now)
    await OutboxEvent.create(
        event_id=event.event_id,
        event_type=event.type,
        body=json.dumps(event.envelope(), separators=(",", ":")),
        created_at=now,
        next_attempt_at=now,
        using_db=conn,
    )
    return event


async def claim_due(limit: int, lease_seconds: float = 60.0) -> list[OutboxEvent]:
    """Take a lease on up to ``limit`` rows due for publishing.

    On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, so
    relays in several daemons never claim the same row; on SQLite the single
    writer serialises the claim.
    """
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        query = (
            OutboxEvent.filter(published_at__isnull=True, next_attempt_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("id")
            .limit(limit)
            .using_db(conn)
        )
        if conn.capabilities.dialect == "postgres":
            query = query.select_for_update(skip_locked=True)
        rows = await query
        if rows:
            await (
                OutboxEvent.filter(id__in=[row.id for row in rows])
                .using_db(conn)
                .update(claimed_until=now + timedelta(seconds=lease_seconds))
            )
    return list(rows)


async def mark_published(row_ids: list[int], now: datetime | None = None) -> None:
    if row_ids:
        await OutboxEvent.filter(id__in=row_ids).update(
            published_at=now or datetime.now(UTC), claimed_until=None
        )


async def mark_failed(row_id: int, error: str, retry_in_seconds: float) -> None:
    moment = datetime.now(UTC)
    await OutboxEvent.filter(id=row_id).update(
        attempts=F("attempts") + 1,
        last_error=error[:255],
        next_attempt_at=moment + timedelta(seconds=retry_in_seconds),
        claimed_until=None,
    )


async def republish_unconsumed(since: datetime) -> int:
    """Mark published-but-never-consumed events for publishing again.

    For a bus that keeps its queues in memory (the embedded endpoint), whatever
    it held when the daemon stopped is gone; consumers de-duplicate by event
    id, so publishing those events again is safe.
    """
    consumed = InboxEvent.filter(received_at__gte=since).values_list("event_id", flat=True)
    return await OutboxEvent.filter(
        published_at__isnull=False, created_at__gte=since, event_id__not_in=Subquery(consumed)
    ).update(published_at=None, claimed_until=None, next_attempt_at=datetime.now(UTC))


async def backlog() -> tuple[int, datetime | None]:
    waiting = OutboxEvent.filter(published_at__isnull=True)
    count = await waiting.count()
    oldest = await waiting.order_by("id").first().values_list("created_at", flat=True)
    return count, oldest  # type: ignore[return-value]
