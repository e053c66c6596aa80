"""The transactional outbox: events written in the same transaction as the
state change they describe, published later by the relay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F

from voltpay.domain.events import Event, Payload, new_event
from voltpay.domain.sms import SMS_EVENT_TYPES
from voltpay.models import sql
from voltpay.models.leases import Lease, lease_is_free, live_cutoff
from voltpay.models.notifications import QUEUED
from voltpay.models.tables import OutboxEvent


async def record_event(conn: BaseDBAsyncClient, payload: Payload, now: datetime) -> Event:
    event = new_event(payload, now)
    await sql.execute(conn, OUTBOX_ROW, *outbox_values(event, now))
    return event


# The columns an event's row is written with: outbox_values() in this order,
# with attempts, the fifth, always 0.
OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, event_type, body, created_at, attempts, next_attempt_at)"
)
OUTBOX_ROW = OUTBOX_INSERT + " VALUES ($1, $2, $3, $4, 0, $5)"


def outbox_values(event: Event, now: datetime) -> tuple[Any, ...]:
    """event_id, event_type, body, created_at and next_attempt_at of its row."""
    body = orjson.dumps(event.envelope()).decode()
    return event.event_id, event.type, body, now, now


# Ordered as the (published_at, next_attempt_at) index is, so the scan starts
# at the first row due and stops after ``limit``; naming published_at (NULL in
# every candidate) lets the planner use the index's order, which IS NULL alone
# does not.
_CLAIM = (
    "UPDATE outbox SET claimed_until = $1, claimed_by = $2 WHERE id IN ("
    "SELECT id FROM outbox WHERE published_at IS NULL AND next_attempt_at <= $3 "
    "AND " + lease_is_free("claimed_until", "claimed_by", "$4", "$5") + " "
    "ORDER BY published_at, next_attempt_at LIMIT $6{lock}) "
    "RETURNING *"
)


async def claim_due(limit: int, lease: Lease) -> list[OutboxEvent]:
    """Take a lease on up to ``limit`` rows due for publishing, in one statement.

    A row leased by an instance that is no longer live is due again at once.
    On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, so
    relays in several daemons never claim the same row; on SQLite the single
    writer serialises the claim.
    """
    now = datetime.now(UTC)
    conn = connections.get("default")
    lock = "" if sql.is_sqlite(conn) else " FOR UPDATE OF outbox SKIP LOCKED"
    rows = await sql.models(
        conn,
        OutboxEvent,
        _CLAIM.format(lock=lock),
        lease.until(now),
        lease.holder,
        now,
        now,
        live_cutoff(now),
        limit,
    )
    return sorted(rows, key=lambda row: row.id)


async def mark_published(row_ids: list[int], now: datetime | None = None) -> None:
    if row_ids:
        await sql.execute(
            connections.get("default"),
            "UPDATE outbox SET published_at = $1, claimed_until = NULL, claimed_by = NULL "
            f"WHERE id IN ({sql.placeholders(len(row_ids), start=2)})",
            now or datetime.now(UTC),
            *row_ids,
        )


async def mark_failed(row_id: int, error: str, retry_in_seconds: float) -> None:
    moment = datetime.now(UTC)
    await OutboxEvent.filter(id=row_id).update(
        attempts=F("attempts") + 1,
        last_error=error[:255],
        next_attempt_at=moment + timedelta(seconds=retry_in_seconds),
        claimed_until=None,
        claimed_by=None,
    )


# An event counts as consumed once the poller could delete its message: the
# audit log holds it and its SMS, if it has one, is settled (sent, or failed
# for good). Neither the inbox nor the audit row alone is enough: both are
# written before the SMS goes, and the audit agent works beside the
# notifications agent, so an event audited but not yet texted when the daemon
# died may have no notification row at all.
_REPUBLISH = (
    "UPDATE outbox SET published_at = NULL, claimed_until = NULL, claimed_by = NULL, "
    "next_attempt_at = $1 "
    "WHERE published_at IS NOT NULL AND created_at >= $2 AND ("
    "NOT EXISTS (SELECT 1 FROM audit_log WHERE audit_log.event_id = outbox.event_id) "
    "OR (outbox.event_type IN ({texted}) AND NOT EXISTS (SELECT 1 FROM notifications "
    "WHERE notifications.event_id = outbox.event_id AND notifications.status <> ${status})))"
)


async def republish_unconsumed(since: datetime) -> int:
    """Mark published-but-never-consumed events for publishing again.

    For a bus that keeps its queues in memory (the embedded endpoint), whatever
    it held when the daemon stopped is gone; consumers de-duplicate by event
    id, so publishing those events again is safe.
    """
    texted = sorted(SMS_EVENT_TYPES)
    statement = _REPUBLISH.format(texted=sql.placeholders(len(texted), 3), status=3 + len(texted))
    return await sql.execute(
        connections.get("default"), statement, datetime.now(UTC), since, *texted, QUEUED
    )


# Housekeeping deletes delivered events a chunk at a time: one statement per
# chunk, so no pass holds locks or a transaction for long, and at most
# PURGE_CHUNKS chunks a pass, so a first pass over years of rows is spread
# over several passes. Only published outbox rows go: one still waiting is
# never deleted, however old.
PURGE_CHUNK = 1000
PURGE_CHUNKS = 100


def _purge_statement(table: str, key: str, column: str, *, sqlite: bool) -> str:
    """One chunk's DELETE. On PostgreSQL ``= ANY(ARRAY(...))`` looks the
    chunk's rows up by key, where ``IN (...)`` reads the whole table into a
    hash join for every chunk."""
    chunk = f"SELECT {key} FROM {table} WHERE {column} < $1 ORDER BY {column} LIMIT $2"
    if sqlite:
        return f"DELETE FROM {table} WHERE {key} IN ({chunk})"
    return f"DELETE FROM {table} WHERE {key} = ANY(ARRAY({chunk}))"


async def purge_delivered(
    before: datetime, *, chunk: int = PURGE_CHUNK, chunks: int = PURGE_CHUNKS
) -> tuple[int, int]:
    """Delete outbox rows published and inbox rows received before ``before``:
    at most ``chunks`` chunks of ``chunk`` rows of each. Returns how many of
    each went."""
    conn = connections.get("default")
    sqlite = sql.is_sqlite(conn)
    deleted = []
    for table, key, column in (
        ("outbox", "id", "published_at"),
        ("inbox", "event_id", "received_at"),
    ):
        statement = _purge_statement(table, key, column, sqlite=sqlite)
        total = 0
        for _ in range(chunks):
            gone = await sql.execute(conn, statement, before, chunk)
            total += gone
            if gone < chunk:
                break
        deleted.append(total)
    return deleted[0], deleted[1]


async def backlog() -> tuple[int, datetime | None]:
    """How many events wait to be published, and when the oldest was written.

    One pass over the unpublished rows through the (published_at, next_attempt_at) index; the
    oldest by ``ORDER BY id`` walked the primary key past every published row.
    """
    found = await sql.rows(
        connections.get("default"),
        "SELECT COUNT(*) AS waiting, MIN(created_at) AS oldest FROM outbox "
        "WHERE published_at IS NULL",
    )
    row = found[0]
    # Converted as the model's own field converts it (SQLite returns text).
    created_at = OutboxEvent._meta.fields_map["created_at"]
    return int(row["waiting"]), created_at.to_python_value(row["oldest"])
