"""Delivered events do not pile up: housekeeping deletes published outbox rows
and inbox rows past the retention, never an event still waiting. And what
the start-up republish on the embedded bus counts as delivered."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from tests.conftest import make_settings, running_daemon
from voltpay.models import outbox as outbox_store
from voltpay.models.database import close_database, open_database
from voltpay.models.tables import AuditRecord, InboxEvent, Notification, OutboxEvent

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=20)
RECENT = NOW - timedelta(days=1)
CUTOFF = NOW - timedelta(days=14)


async def _outbox_row(
    created: datetime, published: datetime | None, event_type: str = "payment_completed"
) -> uuid.UUID:
    row = await OutboxEvent.create(
        event_id=uuid.uuid4(),
        event_type=event_type,
        body="{}",
        created_at=created,
        published_at=published,
        next_attempt_at=created,
    )
    return row.event_id


async def _inbox_row(received: datetime) -> uuid.UUID:
    row = await InboxEvent.create(
        event_id=uuid.uuid4(), event_type="payment_completed", received_at=received
    )
    return row.event_id


async def _left() -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    outbox = await OutboxEvent.all().values_list("event_id", flat=True)
    inbox = await InboxEvent.all().values_list("event_id", flat=True)
    return {uuid.UUID(str(e)) for e in outbox}, {uuid.UUID(str(e)) for e in inbox}


async def test_only_rows_delivered_before_the_cutoff_go(database: str) -> None:
    old_published = await _outbox_row(OLD, OLD)
    published_lately = await _outbox_row(OLD, RECENT)  # waited long, went out lately
    never_published = await _outbox_row(OLD - timedelta(days=300), None)
    recent = await _outbox_row(RECENT, RECENT)
    old_received = await _inbox_row(OLD)
    received_lately = await _inbox_row(RECENT)

    assert await outbox_store.purge_delivered(CUTOFF) == (1, 1)

    outbox, inbox = await _left()
    assert old_published not in outbox
    assert outbox == {published_lately, never_published, recent}
    assert inbox == {received_lately}
    assert old_received not in inbox
    assert await outbox_store.purge_delivered(CUTOFF) == (0, 0)


async def test_a_pass_deletes_at_most_its_chunks(database: str) -> None:
    for _ in range(5):
        await _outbox_row(OLD, OLD)
        await _inbox_row(OLD)
    kept = await _outbox_row(RECENT, RECENT)

    assert await outbox_store.purge_delivered(CUTOFF, chunk=2, chunks=2) == (4, 4)
    assert await outbox_store.purge_delivered(CUTOFF, chunk=2, chunks=2) == (1, 1)
    outbox, inbox = await _left()
    assert outbox == {kept}
    assert inbox == set()


async def test_the_daemon_purges_past_its_retention_when_it_starts(
    database_url: str, moto_server_url: str
) -> None:
    await open_database(database_url, migrate_first=False)
    try:
        gone = {await _outbox_row(OLD, OLD), await _inbox_row(OLD)}
        # Within the 19-day retention: kept.
        lately = NOW - timedelta(days=18)
        kept = {await _outbox_row(OLD, lately), await _inbox_row(lately)}
        waiting = await _outbox_row(OLD, None)
    finally:
        await close_database()

    settings = make_settings(database_url, moto_server_url, outbox={"retention_days": 19})
    async with running_daemon(settings):
        for _ in range(100):
            outbox, inbox = await _left()
            if not gone & (outbox | inbox):
                break
            await asyncio.sleep(0.05)
        outbox, inbox = await _left()
        assert not gone & (outbox | inbox)
        assert kept <= outbox | inbox
        # The relay publishes the waiting one; it is not deleted unpublished.
        assert waiting in outbox


# -- what the start-up republish on the embedded bus counts as consumed ----------------


async def _consumed(event_id: uuid.UUID) -> None:
    """Received (the inbox row is written on receipt) and audited."""
    await InboxEvent.create(event_id=event_id, event_type="payment_completed", received_at=RECENT)
    await AuditRecord.create(
        event_id=event_id,
        event_type="payment_completed",
        occurred_at=RECENT,
        recorded_at=RECENT,
        body="{}",
    )


async def _notified(event_id: uuid.UUID, status: str) -> None:
    await Notification.create(
        id=uuid.uuid4(),
        event_id=event_id,
        event_type="payment_completed",
        to="+2348012345678",
        body="paid",
        status=status,
        created_at=RECENT,
    )


async def test_an_event_received_but_not_yet_texted_is_published_again(database: str) -> None:
    since = NOW - timedelta(days=7)
    texted = await _outbox_row(RECENT, RECENT)
    await _consumed(texted)
    await _notified(texted, "sent")
    refused = await _outbox_row(RECENT, RECENT)
    await _consumed(refused)
    await _notified(refused, "failed")
    no_sms = await _outbox_row(RECENT, RECENT, event_type="meter_checked")  # a type with no SMS
    await _consumed(no_sms)
    # Received and audited, not yet texted when the daemon stopped.
    received = await _outbox_row(RECENT, RECENT)
    await _consumed(received)
    await _notified(received, "queued")
    # Received and audited, its notification row not yet written: the audit
    # agent works beside the notifications agent.
    audited_only = await _outbox_row(RECENT, RECENT)
    await _consumed(audited_only)
    never_received = await _outbox_row(RECENT, RECENT)
    before_the_window = await _outbox_row(OLD, OLD)
    waiting = await _outbox_row(RECENT, None)

    assert await outbox_store.republish_unconsumed(since) == 3

    unpublished = {
        uuid.UUID(str(e))
        for e in await OutboxEvent.filter(published_at__isnull=True).values_list(
            "event_id", flat=True
        )
    }
    assert unpublished == {received, audited_only, never_received, waiting}
    assert before_the_window not in unpublished
