"""Opening and closing the database, and bringing its schema up to date."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.migrations.api import migrate

from voltpay.config.settings import DatabaseSettings, sqlite_path

APP_LABEL = "models"
MODEL_MODULES = ["voltpay.models.tables"]
MIGRATIONS_MODULE = "voltpay.models.migrations"
SQLITE_ENGINE = "voltpay.models.sqlite_engine"
POSTGRES_ENGINE = "voltpay.models.postgres_engine"
CONNECT_TIMEOUT_SECONDS = 10.0
# Migrations run their statements one after another.
MIGRATION_POOL_SIZE = 2
# A daemon waits this long for another to finish migrating before it gives up:
# the longest migration expected, and within systemd's TimeoutStartSec (90 s)
# with the connect timeout added.
MIGRATION_LOCK_WAIT_SECONDS = 60.0
# SQLite's migration lock: the file beside the database, and how often a
# waiting process tries it again.
MIGRATING_SUFFIX = ".migrating"
SQLITE_LOCK_POLL_SECONDS = 0.05
# SQLite copies its write-ahead log into the database (a checkpoint) inside
# the commit that takes the log past ``wal_autocheckpoint`` pages, and every
# statement queued on the one connection waits for it. A checkpoint costs a
# sync (about 0.6 ms on the bench's VM) plus about 4 us a page: at SQLite's
# 1,000 pages, a 5 ms stall every few seconds of load; at 250, a 1.5 ms stall
# four times as often, for about the same work in all. A quiet request's
# slowest moments are the stalls it lands behind (measured in
# bench/results/2026-12-07-checkpoints.md).
SQLITE_PRAGMAS: dict[str, str | int] = {
    "journal_mode": "WAL",
    "busy_timeout": 10000,
    "synchronous": "NORMAL",
    "wal_autocheckpoint": 250,
}


def tortoise_config(url: str, *, pool_max_size: int) -> dict[str, Any]:
    connection = expand_db_url(url.replace("postgresql://", "postgres://", 1))
    credentials: dict[str, Any] = connection["credentials"]
    if urlsplit(url).scheme == "sqlite":
        connection["engine"] = SQLITE_ENGINE
        for pragma, value in SQLITE_PRAGMAS.items():
            credentials.setdefault(pragma, value)
    else:
        connection["engine"] = POSTGRES_ENGINE
        credentials.setdefault("minsize", 1)
        credentials.setdefault("maxsize", pool_max_size)
        # asyncpg waits 60 s by default for a server that accepts and never answers.
        credentials.setdefault("timeout", CONNECT_TIMEOUT_SECONDS)
    return {
        "connections": {"default": connection},
        "apps": {
            APP_LABEL: {
                "models": MODEL_MODULES,
                "migrations": MIGRATIONS_MODULE,
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


class DatabaseUnusable(Exception):
    """The database cannot be opened or written; the message says why, in a line."""


def _ensure_sqlite_folder(url: str) -> None:
    """Create the SQLite file's folder, then check that the file is a database
    this process can write: opened lazily, a bad file would fail only inside
    the first statement, where it once left the engine's lock held for good
    (a hang that SIGTERM could not end)."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=10)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseUnusable(f"SQLite database {path}: {exc}") from None


def _advisory_lock_key(name: str) -> int:
    """A fixed signed 64-bit key (PostgreSQL's advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# Advisory locks are per database: daemons of other databases never wait on it.
MIGRATION_LOCK_KEY = _advisory_lock_key("voltpay:migrations")
# What Tortoise and voltpay's pool take besides asyncpg.connect's arguments.
_NOT_CONNECT_ARGUMENTS = frozenset(
    {
        "minsize",
        "maxsize",
        "max_idle_seconds",
        "connection_name",
        "connection_class",
        "fetch_inserted",
        "loop",
        "schema",
        "application_name",
    }
)


@contextlib.asynccontextmanager
async def _migration_lock(
    credentials: dict[str, Any], *, wait_seconds: float
) -> AsyncIterator[None]:
    """Hold PostgreSQL's session-level advisory lock on ``MIGRATION_LOCK_KEY``.

    Daemons started at once on an empty database would otherwise apply the
    same migration side by side, and all but one can fail on "already
    exists". Under the lock, one applies them and the next finds nothing
    left to do. The lock lives on a connection of its own, outside the pool
    the migrations use, and goes with its session: a holder that dies frees it
    at once. A holder alive but stuck is waited for ``wait_seconds``, then
    start-up fails with one line.
    """
    arguments = {k: v for k, v in credentials.items() if k not in _NOT_CONNECT_ARGUMENTS}
    connection = await asyncpg.connect(**arguments)  # the URL's timeout bounds this
    try:
        try:
            await connection.execute(
                "SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=wait_seconds
            )
        except TimeoutError:
            raise DatabaseUnusable(
                f"PostgreSQL database {credentials.get('database')}: another process has held "
                f"the migration lock for more than {wait_seconds:g} s"
            ) from None
        yield
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        # Closing ends the session, which frees the lock whatever happened above.
        await connection.close(timeout=CONNECT_TIMEOUT_SECONDS)


@contextlib.asynccontextmanager
async def _sqlite_migration_lock(path: Path, *, wait_seconds: float) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``<database>.migrating``, beside it.

    The kernel frees it when its holder closes it or dies, so a crash leaves
    nothing to clear; the empty file stays. A holder alive but stuck is
    waited for ``wait_seconds``, then start-up fails with one line.
    """
    lock_path = path.with_name(path.name + MIGRATING_SUFFIX)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DatabaseUnusable(f"SQLite database {path}: {exc}") from None
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseUnusable(
                        f"SQLite database {path}: another process has been migrating it "
                        f"for more than {wait_seconds:g} s"
                    ) from None
                await asyncio.sleep(SQLITE_LOCK_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # and with it the lock


async def apply_migrations(
    url: str, *, lock_wait_seconds: float = MIGRATION_LOCK_WAIT_SECONDS
) -> None:
    """Apply every versioned migration not yet applied (idempotent).

    One process at a time: daemons sharing the database take turns, under an
    advisory lock on PostgreSQL and a lock on a file beside the database on
    SQLite. SQLite's own locks serialize each statement, not the check of what
    is applied and the applying: processes started at once on a new file all
    found nothing applied, and all but one failed on "already exists".
    """
    await asyncio.to_thread(_ensure_sqlite_folder, url)  # may wait on a lock
    config = tortoise_config(url, pool_max_size=MIGRATION_POOL_SIZE)
    credentials = config["connections"]["default"]["credentials"]
    lock: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
    path = sqlite_path(url)
    if path is not None:
        lock = _sqlite_migration_lock(path, wait_seconds=lock_wait_seconds)
    elif "maxsize" in credentials:  # PostgreSQL
        # A pool of its own size, whatever the URL asks for the daemon's.
        credentials.update(minsize=1, maxsize=MIGRATION_POOL_SIZE)
        lock = _migration_lock(credentials, wait_seconds=lock_wait_seconds)
    async with lock:
        try:
            await migrate(config=config)
        finally:
            await close_database()


# One default for the pool's size: the setting's.
DEFAULT_POOL_MAX_SIZE: int = DatabaseSettings.model_fields["pool_max_size"].default


async def open_database(
    url: str, *, pool_max_size: int = DEFAULT_POOL_MAX_SIZE, migrate_first: bool = True
) -> None:
    if migrate_first:
        await apply_migrations(url)  # which checks the SQLite file first
    else:
        await asyncio.to_thread(_ensure_sqlite_folder, url)  # may wait on a lock
    await Tortoise.init(config=tortoise_config(url, pool_max_size=pool_max_size))


async def close_database() -> None:
    await connections.close_all(discard=True)
    # Forget the models' binding and the compiled INSERTs too: Tortoise keys
    # its statement cache by connection name, not dialect, so a later open on
    # another database kind in the same process (the tests run SQLite and
    # PostgreSQL side by side) would reuse SQL of the wrong dialect.
    await Tortoise._reset_apps()
    EXECUTOR_CACHE.clear()
