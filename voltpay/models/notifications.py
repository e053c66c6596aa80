"""The consumer side: inbox (what was received), notifications (what was
sent) and the append-only audit log."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from voltpay.domain.events import Event
from voltpay.domain.sms import fill_token
from voltpay.models import sql
from voltpay.models.leases import Lease, lease_is_free, live_cutoff
from voltpay.models.tables import Notification

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"


def _db() -> BaseDBAsyncClient:
    conn: BaseDBAsyncClient = connections.get("default")
    return conn


@dataclass(frozen=True)
class Received:
    """One event as the consumer side stores it."""

    event_id: uuid.UUID
    event_type: str
    user_id: uuid.UUID | None
    body: str | None  # the SMS text; None when the event has no SMS
    # The bill whose token fills the text's TOKEN_MARK, if it has one.
    token_bill_id: uuid.UUID | None = None


_NOTIFICATION_INSERT = (
    'INSERT INTO notifications (id, event_id, event_type, user_id, "to", body, token_bill_id, '
    "status, attempts, claimed_until, claimed_by, created_at) "
)


def _inbox_insert(count: int) -> str:
    """The inbox rows of ``count`` events, their values from ``$1`` on
    (``_inbox_values``); a redelivery changes nothing."""
    return (
        "INSERT INTO inbox (event_id, event_type, received_at) VALUES "
        + sql.value_rows(count, 3)
        + " ON CONFLICT (event_id) DO NOTHING"
    )


def _inbox_values(events: Sequence[Received], now: datetime) -> list[Any]:
    return [value for e in events for value in (e.event_id, e.event_type, now)]


async def record_inbox(events: Sequence[Received]) -> None:
    """Note every event id as received (a redelivery changes nothing)."""
    if not events:
        return
    await sql.execute(_db(), _inbox_insert(len(events)), *_inbox_values(events, datetime.now(UTC)))


async def phones_of(user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not user_ids:
        return {}
    found = await sql.rows(
        _db(),
        f"SELECT id, phone_number FROM users WHERE id IN ({sql.placeholders(len(user_ids))})",
        *user_ids,
    )
    return {uuid.UUID(str(row["id"])): str(row["phone_number"]) for row in found}


@dataclass(frozen=True)
class Claimed:
    """A notification row just created, already claimed by us."""

    notification_id: uuid.UUID
    to: str  # the user's phone number; empty when there is none


async def receive(events: Sequence[Received], lease: Lease) -> dict[uuid.UUID, Claimed]:
    """Note every event id in the inbox and create, already claimed by us,
    the notification row of each event that has an SMS: event id → the new
    row, for those whose row did not exist yet.

    On PostgreSQL one statement, one round trip, does all of it (the inbox
    rows, the phone numbers and the notification rows); on SQLite (no INSERT
    inside WITH) the three run one after another.
    """
    if not events:
        return {}
    wanted = [e for e in events if e.body is not None]
    conn = _db()
    if not wanted or sql.is_sqlite(conn):
        await record_inbox(events)
        phones = await phones_of({e.user_id for e in wanted if e.user_id is not None})
        return await create_claimed(wanted, phones, lease)
    now = datetime.now(UTC)
    values = _inbox_values(events, now)
    for e in wanted:
        values += [uuid.uuid4(), e.event_id, e.event_type, e.user_id, e.body, e.token_bill_id]
    values += [QUEUED, lease.until(now), lease.holder, now]
    return _claimed(await sql.rows(conn, _receive_statement(len(events), len(wanted)), *values))


def _claimed(rows: Sequence[Mapping[str, Any]]) -> dict[uuid.UUID, Claimed]:
    """Rows returned as ``id, event_id, "to"``: event id → the new row."""
    return {
        uuid.UUID(str(row["event_id"])): Claimed(uuid.UUID(str(row["id"])), str(row["to"]))
        for row in rows
    }


@functools.lru_cache(maxsize=128)
def _receive_statement(events: int, wanted: int) -> str:
    """The inbox rows' values first, then each wanted event's id, event id,
    type, user id, body and token's bill (typed: a VALUES list in FROM has no
    column types to go by), then the status, the lease's end, its holder and
    now."""
    first = 1 + 3 * events
    rows = ", ".join(
        f"(${n}::uuid, ${n + 1}::uuid, ${n + 2}::text, ${n + 3}::uuid, ${n + 4}::text, "
        f"${n + 5}::uuid)"
        for n in range(first, first + 6 * wanted, 6)
    )
    last = first + 6 * wanted
    return (
        f"WITH inbox_rows AS ({_inbox_insert(events)}) "
        + _NOTIFICATION_INSERT
        + "SELECT v.id, v.event_id, v.event_type, v.user_id, COALESCE(u.phone_number, ''), "
        f"v.body, v.token_bill_id, ${last}, 1, ${last + 1}, ${last + 2}::uuid, ${last + 3} "
        f"FROM (VALUES {rows}) AS v (id, event_id, event_type, user_id, body, token_bill_id) "
        "LEFT JOIN users u ON u.id = v.user_id "
        'ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id, "to"'
    )


async def create_claimed(
    events: Sequence[Received], phones: Mapping[uuid.UUID, str], lease: Lease
) -> dict[uuid.UUID, Claimed]:
    """The notification rows, created already claimed by us, in one statement:
    event id → the new row, for those that did not exist yet."""
    if not events:
        return {}
    now = datetime.now(UTC)
    until = lease.until(now)
    values: list[Any] = []
    for e in events:
        to = phones.get(e.user_id, "") if e.user_id else ""
        values += [uuid.uuid4(), e.event_id, e.event_type, e.user_id, to, e.body]
        values += [e.token_bill_id, QUEUED, 1, until, lease.holder, now]
    created = await sql.rows(
        _db(),
        _NOTIFICATION_INSERT
        + "VALUES "
        + sql.value_rows(len(events), 12)
        + ' ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id, "to"',
        *values,
    )
    return _claimed(created)


async def ensure_notification(
    event_id: uuid.UUID,
    event_type: str,
    user_id: uuid.UUID | None,
    to: str,
    body: str,
    token_bill_id: uuid.UUID | None = None,
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
            token_bill_id=token_bill_id,
            status=QUEUED,
            created_at=datetime.now(UTC),
        )
    except IntegrityError:
        return await Notification.get(event_id=event_id)


async def tokens_of(bill_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The prepaid token of each bill (as the bill keeps it), to fill a text."""
    if not bill_ids:
        return {}
    found = await sql.rows(
        _db(),
        f"SELECT id, token FROM bills WHERE id IN ({sql.placeholders(len(bill_ids))})",
        *bill_ids,
    )
    return {
        uuid.UUID(str(row["id"])): (str(row["token"]) if row["token"] is not None else None)
        for row in found
    }


async def unverified_of(user_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Those of the users whose phone number is not verified yet."""
    if not user_ids:
        return set()
    found = await sql.rows(
        _db(),
        f"SELECT id FROM users WHERE NOT phone_verified AND id IN "
        f"({sql.placeholders(len(user_ids))})",
        *user_ids,
    )
    return {uuid.UUID(str(row["id"])) for row in found}


async def shown(rows: Sequence[Notification]) -> list[Notification]:
    """The rows with each text as it was sent: tokens filled from their bills."""
    tokens = await tokens_of({row.token_bill_id for row in rows if row.token_bill_id})
    for row in rows:
        if row.token_bill_id is not None:
            row.body = fill_token(row.body, tokens.get(row.token_bill_id))
    return list(rows)


_CLAIM = (
    "UPDATE notifications SET claimed_until = $1, claimed_by = $2, attempts = attempts + 1 "
    "WHERE id = $3 AND status = $4 AND " + lease_is_free("claimed_until", "claimed_by", "$5", "$6")
)


async def claim(notification_id: uuid.UUID, lease: Lease) -> bool:
    """Take the right to send; False while a live instance holds it or it is done."""
    now = datetime.now(UTC)
    taken = await sql.execute(
        _db(),
        _CLAIM,
        lease.until(now),
        lease.holder,
        notification_id,
        QUEUED,
        now,
        live_cutoff(now),
    )
    return taken == 1


async def mark_sent(sender: str, sent: Mapping[uuid.UUID, str]) -> None:
    """Record the sends of one sender (notification id → provider message id)
    in a single statement."""
    if not sent:
        return
    cases = " ".join(f"WHEN ${4 + 2 * i} THEN ${5 + 2 * i}" for i in range(len(sent)))
    ids = sql.placeholders(len(sent), start=4 + 2 * len(sent))
    await sql.execute(
        _db(),
        f"UPDATE notifications SET status = $1, sender = $2, sent_at = $3, "
        f"provider_message_id = CASE id {cases} END, claimed_until = NULL, claimed_by = NULL, "
        "error = NULL "
        f"WHERE id IN ({ids})",
        SENT,
        sender,
        datetime.now(UTC),
        *(value for nid, message_id in sent.items() for value in (nid, message_id[:64])),
        *sent,
    )


async def mark_failed(notification_id: uuid.UUID, sender: str, error: str) -> None:
    await Notification.filter(id=notification_id).update(
        status=FAILED, sender=sender, error=error[:255], claimed_until=None, claimed_by=None
    )


async def release(notification_id: uuid.UUID, error: str) -> None:
    await Notification.filter(id=notification_id, status=QUEUED).update(
        claimed_until=None, claimed_by=None, error=error[:255]
    )


async def append_audit(events: Sequence[Event]) -> None:
    """Append each event once per event id (a redelivery changes nothing)."""
    if not events:
        return
    now = datetime.now(UTC)
    values: list[Any] = []
    for event in events:
        body = orjson.dumps(event.envelope(), option=orjson.OPT_SORT_KEYS).decode()
        values += [event.event_id, event.type, event.occurred_at, now, body]
    await sql.execute(
        _db(),
        "INSERT INTO audit_log (event_id, event_type, occurred_at, recorded_at, body) VALUES "
        + sql.value_rows(len(events), 5)
        + " ON CONFLICT (event_id) DO NOTHING",
        *values,
    )
