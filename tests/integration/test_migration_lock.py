"""On PostgreSQL, processes take turns to migrate: each waits for the one
migrating under the advisory lock, and gives up with one line when the holder
is stuck rather than waiting for good."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from voltpay.models.database import MIGRATION_LOCK_KEY, DatabaseUnusable, apply_migrations

pytestmark = pytest.mark.postgres


@pytest.fixture
async def lock_holder(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session of that database, holding the migration lock."""
    connection = await asyncpg.connect(pg_database)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        yield connection
    finally:
        await connection.close()


async def _migrated(url: str) -> bool:
    connection = await asyncpg.connect(url)
    try:
        found = await connection.fetchval("SELECT to_regclass('public.tortoise_migrations')")
        return found is not None
    finally:
        await connection.close()


async def _advisory_locks(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return count
    finally:
        await connection.close()


async def test_migrations_wait_for_the_holder_then_run(
    pg_database: str, lock_holder: asyncpg.Connection
) -> None:
    migrating = asyncio.create_task(apply_migrations(pg_database))
    await asyncio.sleep(1.0)
    assert not migrating.done()
    assert not await _migrated(pg_database)

    await lock_holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    await asyncio.wait_for(migrating, 60)
    assert await _migrated(pg_database)
    assert await _advisory_locks(pg_database) == 0  # its own lock went with it


async def test_a_stuck_holder_fails_migrations_with_one_line(
    pg_database: str, lock_holder: asyncpg.Connection
) -> None:
    with pytest.raises(DatabaseUnusable) as failure:
        await asyncio.wait_for(apply_migrations(pg_database, lock_wait_seconds=0.5), 30)
    message = str(failure.value)
    assert "\n" not in message
    assert "migration lock" in message and "0.5 s" in message
    assert not await _migrated(pg_database)
    assert await _advisory_locks(pg_database) == 1  # the holder's alone


async def test_migrating_twice_in_turn_changes_nothing(pg_database: str) -> None:
    await apply_migrations(pg_database)
    await apply_migrations(pg_database)
    assert await _advisory_locks(pg_database) == 0
