"""The bench's database ceiling does the work it is compared against: the pay
transaction and the payment_completed outbox row, on both databases, in a
table of its own that voltpay's relay never reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.ceilings.database import build_app
from bench.data import BILL_AMOUNT_MINOR, BenchDb, PostgresDb, SqliteDb


@pytest.fixture
async def bench_db(database_url: str) -> AsyncIterator[BenchDb]:
    db: BenchDb
    if database_url.startswith("sqlite://"):
        db = SqliteDb(Path(database_url[len("sqlite://") :]))
    else:
        db = await PostgresDb.connect(database_url)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def ceiling(database_url: str) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(build_app(database_url, pool_size=2))) as client:
        yield client


async def test_a_payment_writes_its_event_to_the_ceilings_own_outbox(
    bench_db: BenchDb,
    ceiling: TestClient,  # type: ignore[type-arg]
) -> None:
    await bench_db.seed_users(2)
    (token, bill_id), _ = await bench_db.add_bills(2)
    voltpay_rows = await bench_db._fetch("SELECT COUNT(*) FROM outbox")

    reply = await ceiling.post(
        f"/api/Vend/{bill_id}/pay", headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status == 200, await reply.text()
    paid = await reply.json()
    assert paid["status"] == "paid"

    rows = await bench_db._fetch("SELECT event_id, event_type, body FROM ceiling_outbox")
    assert len(rows) == 1
    event_id, event_type, body = rows[0]
    assert event_type == "payment_completed"
    event = json.loads(body)
    assert event["eventId"] == str(event_id)
    assert event["data"]["billId"] == str(bill_id)
    assert event["data"]["token"] == paid["token"]
    assert event["data"]["amount"] == paid["amount"]
    assert paid["amount"] == f"{BILL_AMOUNT_MINOR // 100}.{BILL_AMOUNT_MINOR % 100:02d}"
    # voltpay's outbox is untouched: its relay must not deliver the ceiling's rows.
    assert await bench_db._fetch("SELECT COUNT(*) FROM outbox") == voltpay_rows

    again = await ceiling.post(
        f"/api/Vend/{bill_id}/pay", headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status == 409
    assert len(await bench_db._fetch("SELECT event_id FROM ceiling_outbox")) == 1
    # The other bill is still pending; the refused payment wrote nothing.
    pending = await bench_db._fetch("SELECT COUNT(*) FROM bills WHERE status = {0}", "pending")
    assert pending[0][0] == 1


async def test_bench_writes_leave_postgres_planner_statistics(empty_postgres_url: str) -> None:
    """Autovacuum may be off on the server the bench meets: the bench's own
    bulk writes are followed by what it would do, so the planner knows the
    tables' sizes (a table never analyzed has reltuples -1)."""
    bench_db = await PostgresDb.connect(empty_postgres_url)
    try:
        await bench_db.seed_users(3)
        await bench_db.add_bills(5)
        await bench_db.insert_backlog(4)
        rows = await bench_db._fetch(
            "SELECT relname, reltuples FROM pg_class "
            "WHERE relname IN ('users', 'wallets', 'sessions', 'bills', 'outbox') "
            "AND relkind = 'r'"
        )
    finally:
        await bench_db.close()
    assert {name: int(tuples) for name, tuples in rows} == {
        "users": 3,
        "wallets": 3,
        "sessions": 3,
        "bills": 5,
        "outbox": 4,
    }
