"""Scratch PostgreSQL databases for tests and test runners: created with a
unique name, dropped on the way out whatever happened."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg

PG_ADMIN_URL = os.environ.get("VOLTPAY_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


async def admin(sql: str) -> None:
    """Run one statement as the administrator, on the maintenance database."""
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def url_of(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextlib.asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """A new, empty database's URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield url_of(name)
    finally:
        # FORCE: a SIGKILLed daemon's sessions may linger for a moment.
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
