"""On SQLite, processes take turns to migrate a file, under a lock on a file
beside it: each waits for the one migrating, gives up with one line when the
holder is stuck, and goes at once when the holder has died."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltpay.models.database import MIGRATING_SUFFIX, DatabaseUnusable, apply_migrations

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "voltpay.sqlite3"


@pytest.fixture
def lock_file(database: Path) -> Path:
    return database.with_name(database.name + MIGRATING_SUFFIX)


@pytest.fixture
def holder(lock_file: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process, holding the migration lock until it is told or killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def applied(database: Path) -> int:
    with sqlite3.connect(database) as db:
        found = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'tortoise_migrations'"
        ).fetchone()[0]
        if not found:
            return 0
        return int(db.execute("SELECT count(*) FROM tortoise_migrations").fetchone()[0])


async def test_migrations_wait_for_the_holder_then_run(
    database: Path, holder: subprocess.Popen[str]
) -> None:
    migrating = asyncio.create_task(apply_migrations(f"sqlite://{database}"))
    await asyncio.sleep(0.5)
    assert not migrating.done()
    assert applied(database) == 0
    assert holder.stdin is not None
    holder.stdin.close()  # the holder ends, and its lock with it
    await asyncio.wait_for(migrating, 30)
    assert applied(database) > 0


async def test_a_stuck_holder_fails_migrations_with_one_line(
    database: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(DatabaseUnusable) as refused:
        await apply_migrations(f"sqlite://{database}", lock_wait_seconds=0.3)
    assert "another process has been migrating it for more than 0.3 s" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert applied(database) == 0


async def test_a_holder_killed_leaves_no_lock_behind(
    database: Path, lock_file: Path, holder: subprocess.Popen[str]
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # The file stays; the lock went with its holder.
    assert await asyncio.to_thread(lock_file.exists)
    await asyncio.wait_for(apply_migrations(f"sqlite://{database}", lock_wait_seconds=0.3), 30)
    assert applied(database) > 0
    # Released after migrating, for the next process.
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
