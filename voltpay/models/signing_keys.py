"""The shared secrets of ``signing_keys``, created once, race-free: every
daemon inserts a fresh key only if none exists yet, then reads the one
that won, so daemons starting at the same moment end up with the same key."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from voltpay.models import sql

EVENTS = "events"
_KEY_BYTES = 32


async def shared_secret(purpose: str = EVENTS) -> bytes:
    """The key for ``purpose``, made at its first use."""
    conn: BaseDBAsyncClient = connections.get("default")
    await sql.execute(
        conn,
        "INSERT INTO signing_keys (purpose, secret, created_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (purpose) DO NOTHING",
        purpose,
        secrets.token_hex(_KEY_BYTES),
        datetime.now(UTC),
    )
    [row] = await sql.rows(conn, "SELECT secret FROM signing_keys WHERE purpose = $1", purpose)
    return bytes.fromhex(str(row["secret"]))
