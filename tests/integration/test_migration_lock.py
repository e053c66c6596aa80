"""On PostgreSQL, processes take turns to migrate: each waits for the one
migrating under the advisory lock, and gives up with one line when the holder
is stuck rather than waiting for good."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import PG_ADMIN_URL
from voltpay.models.database import MIGRATION_LOCK_KEY, DatabaseUnusable, apply_migrations

pytestmark = pytest.mark.postgres


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A new PostgreSQL database with nothing in it, dropped afterwards."""
    name = f"voltpay_lock_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def lock_holder(empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session of that database, holding the migration lock."""
    connection = await asyncpg.connect(empty_database)
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
    empty_database: str, lock_holder: asyncpg.Connection
) -> None:
    migrating = asyncio.create_task(apply_migrations(empty_database))
    await asyncio.sleep(1.0)
    assert not migrating.done()
    assert not await _migrated(empty_database)

    await lock_holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    await asyncio.wait_for(migrating, 60)
    assert await _migrated(empty_database)
    assert await _advisory_locks(empty_database) == 0  # its own lock went with it


async def test_a_stuck_holder_fails_migrations_with_one_line(
    empty_database: str, lock_holder: asyncpg.Connection
) -> None:
    with pytest.raises(DatabaseUnusable) as failure:
        await asyncio.wait_for(apply_migrations(empty_database, lock_wait_seconds=0.5), 30)
    message = str(failure.value)
    assert "\n" not in message
    assert "migration lock" in message and "0.5 s" in message
    assert not await _migrated(empty_database)
    assert await _advisory_locks(empty_database) == 1  # the holder's alone


async def test_migrating_twice_in_turn_changes_nothing(empty_database: str) -> None:
    await apply_migrations(empty_database)
    await apply_migrations(empty_database)
    assert await _advisory_locks(empty_database) == 0
