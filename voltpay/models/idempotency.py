"""Idempotency keys: the first response per (scope, key) kept for replay."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError

from voltpay.models import leases, sql
from voltpay.models.tables import IdempotencyRecord

IN_PROGRESS = "in_progress"
DONE = "done"
# Longer than any request can run (the vend timeout and the drain grace are
# far shorter), so only a claim whose daemon died is ever taken over; a claim
# that names its daemon run is taken over as soon as that run is not live.
ABANDONED_AFTER_SECONDS = 300


class Claim(enum.Enum):
    NEW = "new"
    REPLAY = "replay"
    IN_PROGRESS = "in_progress"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    content_type: str
    body: str


@dataclass(frozen=True)
class Key:
    """A claim this request holds (``Claim.NEW``)."""

    scope: str
    key: str


async def claim(
    scope: str, key: str, request_hash: str, ttl_seconds: int, *, holder: uuid.UUID
) -> tuple[Claim, StoredResponse | None]:
    """Claim the key for this request of the daemon run ``holder``, or say
    why not: its answer is stored (REPLAY), another request holds it, or it
    was used with another request (MISMATCH)."""
    now = datetime.now(UTC)
    for _ in range(3):
        try:
            await IdempotencyRecord.create(
                scope=scope,
                key=key,
                request_hash=request_hash,
                state=IN_PROGRESS,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_seconds),
                claimed_by=holder,
            )
            return Claim.NEW, None
        except IntegrityError:
            existing = await IdempotencyRecord.get_or_none(scope=scope, key=key)
            if existing is None:
                continue
            if existing.expires_at <= now:
                await IdempotencyRecord.filter(id=existing.id, expires_at__lte=now).delete()
                continue
            if existing.request_hash != request_hash:
                return Claim.MISMATCH, None
            if existing.state != DONE or existing.response_status is None:
                if await _abandoned(existing, now):
                    # Its daemon died mid-request; let this retry run it.
                    await IdempotencyRecord.filter(id=existing.id, state=IN_PROGRESS).delete()
                    continue
                return Claim.IN_PROGRESS, None
            return Claim.REPLAY, StoredResponse(
                existing.response_status,
                existing.response_content_type or "application/json",
                existing.response_body or "",
            )
    return Claim.IN_PROGRESS, None


async def _abandoned(record: IdempotencyRecord, now: datetime) -> bool:
    if record.created_at <= now - timedelta(seconds=ABANDONED_AFTER_SECONDS):
        return True
    holder = record.claimed_by
    return holder is not None and not await leases.is_live(uuid.UUID(str(holder)), now)


_COMPLETE = (
    "UPDATE idempotency_keys SET state = $1, response_status = $2, "
    "response_content_type = $3, response_body = $4 "
    "WHERE scope = $5 AND key = $6 AND state = $7"
)


async def complete(conn: BaseDBAsyncClient, claim: Key, response: StoredResponse) -> bool:
    """Store the answer in the caller's transaction, with the change it answers,
    so that no retry can make the change again, whatever happens after the
    commit. False if the claim is no longer held (released when the request
    was cancelled, or taken over as abandoned): the caller must then not make
    the change."""
    changed = await sql.execute(
        conn,
        _COMPLETE,
        DONE,
        response.status,
        response.content_type,
        response.body,
        claim.scope,
        claim.key,
        IN_PROGRESS,
    )
    return changed == 1


async def store(scope: str, key: str, response: StoredResponse) -> None:
    """Store the answer after the fact, on its own (nothing if the claim is gone)."""
    await complete(connections.get("default"), Key(scope, key), response)


async def release(scope: str, key: str) -> None:
    """Forget a claim whose request did not finish, so a retry can run it."""
    await IdempotencyRecord.filter(scope=scope, key=key, state=IN_PROGRESS).delete()


async def purge_expired(now: datetime | None = None) -> int:
    return await IdempotencyRecord.filter(expires_at__lte=now or datetime.now(UTC)).delete()
