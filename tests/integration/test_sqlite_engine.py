"""voltpay's SQLite engine: Tortoise's transactions with a round trip less, and
whole transactions in one trip to the connection's thread."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tortoise import connections
from tortoise.exceptions import IntegrityError, OperationalError, TransactionManagementError
from tortoise.transactions import in_transaction

from voltpay.models import sql
from voltpay.models.database import close_database, open_database
from voltpay.models.sqlite_engine import Client, own_client


@pytest.fixture
async def client(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Client]:
    path = tmp_path / "voltpay.sqlite3"
    shutil.copyfile(sqlite_template, path)
    await open_database(f"sqlite://{path}", migrate_first=False)
    conn = connections.get("default")
    assert isinstance(conn, Client)
    await conn.execute_query("SELECT 1")  # the connection is opened on first use
    yield conn
    await close_database()


def count_commits(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    raw = client._connection
    assert raw is not None
    commits: list[None] = []
    commit = raw.commit

    async def counted() -> Any:
        commits.append(None)
        return await commit()

    monkeypatch.setattr(raw, "commit", counted)
    return commits


async def write(conn: Any, username: str) -> None:
    await sql.execute(
        conn,
        "INSERT INTO login_failures (username, failed_at) VALUES ($1, $2)",
        username,
        "2026-01-01 00:00:00+00:00",
    )


async def test_a_transaction_commits_once(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = count_commits(client, monkeypatch)
    async with in_transaction() as conn:
        await write(conn, "someone")
    assert len(commits) == 1
    rows = await sql.rows(client, "SELECT username FROM login_failures")
    assert [row["username"] for row in rows] == ["someone"]


async def test_a_transaction_left_open_is_committed_before_the_next_begins(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = client._connection
    assert raw is not None
    await raw.execute("BEGIN")
    await raw.execute(
        "INSERT INTO login_failures (username, failed_at) VALUES ('left', '2026-01-01')"
    )
    commits = count_commits(client, monkeypatch)
    async with in_transaction() as conn:
        await write(conn, "next")
    assert len(commits) == 2
    rows = await sql.rows(client, "SELECT username FROM login_failures ORDER BY username")
    assert [row["username"] for row in rows] == ["left", "next"]


async def test_a_failed_transaction_writes_nothing(client: Client) -> None:
    with pytest.raises(RuntimeError):
        async with in_transaction() as conn:
            await write(conn, "never")
            raise RuntimeError("the payment failed")
    assert await sql.rows(client, "SELECT username FROM login_failures") == []


def count_trips(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Every call queued to the connection's thread."""
    raw = client._connection
    assert raw is not None
    trips: list[None] = []
    execute = raw._execute

    async def counted(*args: Any, **kwargs: Any) -> Any:
        trips.append(None)
        return await execute(*args, **kwargs)

    monkeypatch.setattr(raw, "_execute", counted)
    return trips


def insert(db: sqlite3.Connection, username: str) -> None:
    db.execute(
        "INSERT INTO login_failures (username, failed_at) VALUES (?, '2026-01-01 00:00:00+00:00')",
        (username,),
    )


async def usernames(client: Client) -> list[str]:
    rows = await sql.rows(client, "SELECT username FROM login_failures ORDER BY username")
    return [row["username"] for row in rows]


async def test_run_transaction_is_one_trip_and_commits(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = count_trips(client, monkeypatch)

    def work(db: sqlite3.Connection) -> int:
        insert(db, "first")
        insert(db, "second")
        return int(db.execute("SELECT count(*) FROM login_failures").fetchone()[0])

    assert await client.run_transaction(work) == 2
    assert len(trips) == 1
    assert await usernames(client) == ["first", "second"]
    raw = client._connection
    assert raw is not None and not raw.in_transaction


async def test_run_transaction_that_raises_writes_nothing(client: Client) -> None:
    def work(db: sqlite3.Connection) -> None:
        insert(db, "never")
        raise LookupError("refused half-way")

    with pytest.raises(LookupError, match="half-way"):
        await client.run_transaction(work)
    assert await usernames(client) == []
    raw = client._connection
    assert raw is not None and not raw.in_transaction
    await write(client, "after")  # the connection goes on as before
    assert await usernames(client) == ["after"]


async def test_run_transaction_gives_tortoise_errors(client: Client) -> None:
    def work(db: sqlite3.Connection) -> None:
        insert(db, "twice")
        db.execute("INSERT INTO bills (id) VALUES (NULL)")  # NOT NULL columns

    with pytest.raises(IntegrityError):
        await client.run_transaction(work)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("SELECT * FROM no_such_table")

    with pytest.raises(OperationalError):
        await client.run_transaction(broken)
    assert await usernames(client) == []


async def test_run_transaction_takes_turns_with_tortoise_transactions(client: Client) -> None:
    async def tortoise_side(n: int) -> None:
        async with in_transaction() as conn:
            await write(conn, f"orm-{n}-a")
            await asyncio.sleep(0)
            await write(conn, f"orm-{n}-b")

    async def thread_side(n: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            insert(db, f"one-{n}-a")
            insert(db, f"one-{n}-b")

        await client.run_transaction(work)

    await asyncio.gather(*(side(n) for n in range(20) for side in (tortoise_side, thread_side)))
    names = await usernames(client)
    assert len(names) == 80 and len(set(names)) == 80


async def test_a_transaction_of_its_own_is_refused_inside_another(client: Client) -> None:
    assert own_client(client) is client
    async with in_transaction() as conn:
        with pytest.raises(TransactionManagementError):
            own_client(conn)


async def test_tortoise_statements_wait_for_the_queued_transactions(client: Client) -> None:
    """Tortoise counts a statement's changes from ``total_changes`` before and
    after it; a whole transaction running meanwhile in the connection's thread
    would be counted too, unless the statement waits for the queue to empty."""
    await write(client, "target")

    async def queued(n: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            for k in range(5):
                insert(db, f"queued-{n}-{k}")

        await client.run_transaction(work)

    async def counted_by_tortoise(n: int) -> int:
        changed, _ = await client.execute_query(
            "UPDATE login_failures SET failed_at = ? WHERE username = ?",
            [f"2026-01-02 00:00:{n:02d}+00:00", "target"],
        )
        return changed

    async def counted_in_turn(n: int) -> int:
        return await sql.execute(
            client,
            "UPDATE login_failures SET failed_at = $1 WHERE username = $2",
            f"2026-01-03 00:00:{n:02d}+00:00",
            "target",
        )

    sides = (queued, counted_by_tortoise, counted_in_turn)
    outcomes = await asyncio.gather(*(side(n) for n in range(30) for side in sides))
    assert [changed for changed in outcomes if changed is not None] == [1] * 60
    assert len(await usernames(client)) == 1 + 30 * 5


async def test_a_read_sees_what_was_queued_before_it(client: Client) -> None:
    def work(db: sqlite3.Connection) -> None:
        insert(db, "queued")

    writing = asyncio.ensure_future(client.run_transaction(work))
    await asyncio.sleep(0)  # queued, perhaps not yet run
    found = await sql.rows(client, "SELECT username FROM login_failures")
    await writing
    assert found == [{"username": "queued"}]


async def test_a_caller_that_gives_up_leaves_the_transaction_to_finish(client: Client) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(db: sqlite3.Connection) -> None:
        insert(db, "slow")
        started.set()
        release.wait(10)

    caller = asyncio.ensure_future(client.run_transaction(slow))
    assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # A Tortoise statement waits for the transaction, which commits.
    counting = asyncio.ensure_future(
        client.execute_query("UPDATE login_failures SET failed_at = failed_at")
    )
    await asyncio.sleep(0.05)
    assert not counting.done()
    release.set()
    assert (await counting)[0] == 1
    assert await usernames(client) == ["slow"]


async def test_the_log_is_checkpointed_in_short_steps(client: Client, tmp_path: Path) -> None:
    """A checkpoint stalls every statement queued on the one connection, for a
    time that grows with the pages it copies: the log is copied back every
    ``wal_autocheckpoint`` (250) pages rather than SQLite's 1,000."""
    wal = tmp_path / "voltpay.sqlite3-wal"

    def write_pages(db: sqlite3.Connection) -> tuple[int, int]:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        for n in range(20):
            db.execute(
                "INSERT INTO login_failures (username, failed_at) VALUES (?, ?)",
                (f"{n}-" + "x" * (page_size - 100), "2026-01-01 00:00:00+00:00"),
            )
        return page_size, int(db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    largest = 0
    for _ in range(60):  # 1,200 pages and more, over 60 commits
        page_size, autocheckpoint = await client.run_transaction(write_pages)
        largest = max(largest, wal.stat().st_size)
    assert autocheckpoint == 250
    # The writes took the log past 250 pages...
    assert largest > 250 * page_size
    # ...and no further than one commit's pages (about 100: its rows and
    # their index's) beyond: the commit that passes 250 copies them back, and
    # the log starts over. At SQLite's 1,000 pages it would pass 1,000.
    assert largest < 2 * 250 * (page_size + 24)
