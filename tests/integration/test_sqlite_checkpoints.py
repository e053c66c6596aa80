"""SQLite's WAL checkpoints run off the writing connection while the daemon
runs, and the WAL still stays short under a steady stream of commits."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tortoise import connections

from voltpay.models import checkpoint
from voltpay.models.checkpoint import WalCheckpointer
from voltpay.models.database import close_database, open_database

PAGE_BYTES = 4096
ROW_BYTES = 3000


@pytest.fixture
async def sqlite_file(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Path]:
    path = tmp_path / "voltpay.sqlite3"
    shutil.copyfile(sqlite_template, path)
    await open_database(f"sqlite://{path}", migrate_first=False)
    await writer()("CREATE TABLE scratch (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    yield path
    await close_database()


def writer() -> Any:
    return connections.get("default").execute_script


async def autocheckpoint_pages() -> int:
    rows = await connections.get("default").execute_query_dict("PRAGMA wal_autocheckpoint")
    return int(next(iter(rows[0].values())))


def wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_the_writer_leaves_checkpoints_to_the_checkpointer_until_it_stops(
    sqlite_file: Path,
) -> None:
    assert await autocheckpoint_pages() == checkpoint.DEFAULT_AUTOCHECKPOINT_PAGES
    checkpointer = WalCheckpointer(sqlite_file, writer())
    await checkpointer.start()
    try:
        assert await autocheckpoint_pages() == 0
    finally:
        await checkpointer.stop()
    assert await autocheckpoint_pages() == checkpoint.DEFAULT_AUTOCHECKPOINT_PAGES


async def test_the_wal_stays_short_under_a_steady_stream_of_commits(sqlite_file: Path) -> None:
    restart_frames = 100
    checkpointer = WalCheckpointer(
        sqlite_file, writer(), interval_seconds=0.005, restart_frames=restart_frames
    )
    await checkpointer.start()
    commits = 1500
    longest = 0
    try:
        connection = connections.get("default")
        for number in range(commits):
            await connection.execute_query(
                "INSERT INTO scratch (id, body) VALUES (?, ?)", [number, "x" * ROW_BYTES]
            )
            longest = max(longest, wal_bytes(sqlite_file))
            if number % 50 == 0:
                await asyncio.sleep(0.01)  # lets a pass land between commits now and then
    finally:
        await checkpointer.stop()

    written = commits * ROW_BYTES
    # Without checkpoints the WAL would hold every commit: about 18 MB here.
    assert longest < written / 3
    assert longest < 6 * restart_frames * PAGE_BYTES
    rows = await connections.get("default").execute_query_dict("SELECT count(*) AS n FROM scratch")
    assert rows[0]["n"] == commits


async def test_checkpoints_that_keep_failing_hand_them_back_to_the_writer(
    sqlite_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "FAILURES_BEFORE_FALLBACK", 3)
    checkpointer = WalCheckpointer(sqlite_file, writer(), interval_seconds=0.001)

    def failing() -> checkpoint.Checkpoint:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(checkpointer, "_checkpoint", failing)
    await checkpointer.start()
    try:
        for _ in range(200):
            if await autocheckpoint_pages() != 0:
                break
            await asyncio.sleep(0.01)
        assert await autocheckpoint_pages() == checkpoint.DEFAULT_AUTOCHECKPOINT_PAGES
    finally:
        await checkpointer.stop()
