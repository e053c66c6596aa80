"""voltpay's SQLite engine: Tortoise's transactions, one round trip less."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from voltpay.models import sql
from voltpay.models.database import close_database, open_database
from voltpay.models.sqlite_engine import Client


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
