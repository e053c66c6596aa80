"""The bench's FastAPI peer does the database ceiling's work and answers as the
ceiling does: one debit per bill, with its ledger row and its outbox row (in a
table of its own that voltpay's relay never reads), and the same refusals.
PostgreSQL only, as the bench runs it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bench.ceilings import database, fastapi_peer
from bench.data import BALANCE_MINOR, BILL_AMOUNT_MINOR, PostgresDb
from bench.procs import free_port
from voltpay.models.database import DEFAULT_POOL_MAX_SIZE


@dataclass(frozen=True)
class Served:
    url: str
    outbox: str  # the table its payment_completed rows go to


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: dict[str, Any]


@pytest.fixture
async def bench_db(empty_postgres_url: str) -> AsyncIterator[PostgresDb]:
    db = await PostgresDb.connect(empty_postgres_url)
    try:
        await db.seed_users(2)
        yield db
    finally:
        await db.close()


@pytest.fixture
async def peer(empty_postgres_url: str) -> AsyncIterator[Served]:
    """The peer as the bench starts it (voltpay's pool size), in this process."""
    port = free_port()
    server = fastapi_peer.server(fastapi_peer.create_app(empty_postgres_url), "127.0.0.1", port)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            raise RuntimeError("the peer did not start")
        await asyncio.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", fastapi_peer.OUTBOX)
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def ceiling(empty_postgres_url: str) -> AsyncIterator[Served]:
    async with TestServer(database.build_app(empty_postgres_url, pool_size=2)) as server:
        yield Served(str(server.make_url("")).rstrip("/"), database.OUTBOX)


@pytest.fixture(params=["peer", "ceiling"])
def served(request: pytest.FixtureRequest) -> Served:
    """Each refusal test runs on the peer and on the ceiling: the two agree."""
    chosen: Served = request.getfixturevalue(request.param)
    return chosen


async def pay(served: Served, bill_id: uuid.UUID, token: str | None) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{served.url}/api/Vend/{bill_id}/pay", headers=headers) as reply,
    ):
        return Reply(reply.status, reply.content_type, json.loads(await reply.read()))


async def balance(db: PostgresDb, token: str) -> int:
    [wallet] = [u.wallet_id for u in db.users if u.token == token]
    rows = await db._fetch("SELECT balance_minor FROM wallets WHERE id = {0}", wallet)
    return int(rows[0][0])


async def count(db: PostgresDb, sql: str, *args: Any) -> int:
    return int((await db._fetch(sql, *args))[0][0])


async def test_a_payment_debits_once_and_writes_its_rows(
    bench_db: PostgresDb, peer: Served
) -> None:
    (token, bill_id), _ = await bench_db.add_bills(2)
    voltpay_rows = await count(bench_db, "SELECT COUNT(*) FROM outbox")

    paid = await pay(peer, bill_id, token)

    assert paid.status == 200, paid.body
    assert paid.content_type == "application/json"
    assert paid.body["status"] == "paid"
    assert paid.body["billId"] == str(bill_id)
    left = BALANCE_MINOR - BILL_AMOUNT_MINOR
    assert await balance(bench_db, token) == left
    assert paid.body["walletBalance"] == database.money_text(left)
    ledger = await bench_db._fetch(
        "SELECT kind, amount_minor, balance_after_minor FROM ledger_entries WHERE bill_id = {0}",
        bill_id,
    )
    assert ledger == [("debit", -BILL_AMOUNT_MINOR, left)]
    rows = await bench_db._fetch(f"SELECT event_id, event_type, body FROM {peer.outbox}")
    [(event_id, event_type, body)] = rows
    assert event_type == "payment_completed"
    event = json.loads(body)
    assert event["eventId"] == str(event_id)
    assert event["data"]["billId"] == str(bill_id)
    assert event["data"]["amount"] == paid.body["amount"]
    assert event["data"]["walletBalance"] == paid.body["walletBalance"]
    # voltpay's outbox is untouched: its relay must not deliver the peer's rows.
    assert await count(bench_db, "SELECT COUNT(*) FROM outbox") == voltpay_rows
    # The other bill is still pending.
    assert await count(bench_db, "SELECT COUNT(*) FROM bills WHERE status = 'pending'") == 1


async def test_a_bill_paid_at_once_from_several_requests_is_debited_once(
    bench_db: PostgresDb, peer: Served
) -> None:
    [(token, bill_id)] = await bench_db.add_bills(1)

    replies = await asyncio.gather(*(pay(peer, bill_id, token) for _ in range(4)))

    assert sorted(r.status for r in replies) == [200, 409, 409, 409]
    assert await balance(bench_db, token) == BALANCE_MINOR - BILL_AMOUNT_MINOR
    assert await count(bench_db, "SELECT COUNT(*) FROM ledger_entries") == 1
    assert await count(bench_db, f"SELECT COUNT(*) FROM {peer.outbox}") == 1


async def test_a_second_payment_of_a_bill_is_refused_and_writes_nothing(
    bench_db: PostgresDb, served: Served
) -> None:
    [(token, bill_id)] = await bench_db.add_bills(1)
    assert (await pay(served, bill_id, token)).status == 200

    again = await pay(served, bill_id, token)

    assert (again.status, again.content_type) == (409, "application/problem+json")
    assert again.body == {"status": 409, "code": "bill_not_payable"}
    assert await balance(bench_db, token) == BALANCE_MINOR - BILL_AMOUNT_MINOR
    assert await count(bench_db, "SELECT COUNT(*) FROM ledger_entries") == 1
    assert await count(bench_db, f"SELECT COUNT(*) FROM {served.outbox}") == 1


async def test_a_wallet_short_of_the_amount_is_refused_and_nothing_is_written(
    bench_db: PostgresDb, served: Served
) -> None:
    [(token, bill_id)] = await bench_db.add_bills(1)
    [user] = [u for u in bench_db.users if u.token == token]
    await bench_db._execute(
        "UPDATE wallets SET balance_minor = {0} WHERE id = {1}",
        BILL_AMOUNT_MINOR - 1,
        user.wallet_id,
    )

    refused = await pay(served, bill_id, token)

    assert (refused.status, refused.content_type) == (402, "application/problem+json")
    assert refused.body == {"status": 402, "code": "insufficient_funds"}
    assert await balance(bench_db, token) == BILL_AMOUNT_MINOR - 1
    # The bill's move to processing went back with the refused debit.
    assert await count(bench_db, "SELECT COUNT(*) FROM bills WHERE status = 'pending'") == 1
    assert await count(bench_db, "SELECT COUNT(*) FROM ledger_entries") == 0
    assert await count(bench_db, f"SELECT COUNT(*) FROM {served.outbox}") == 0


@pytest.mark.parametrize("token", [None, "not-a-session"])
async def test_a_request_without_a_live_session_is_refused(
    bench_db: PostgresDb, served: Served, token: str | None
) -> None:
    [(_, bill_id)] = await bench_db.add_bills(1)

    refused = await pay(served, bill_id, token)

    assert (refused.status, refused.content_type) == (401, "application/problem+json")
    assert refused.body == {"status": 401, "code": "unauthorized"}
    assert await count(bench_db, "SELECT COUNT(*) FROM bills WHERE status = 'pending'") == 1


async def test_the_peer_answers_a_payment_as_the_ceiling_does(
    bench_db: PostgresDb, peer: Served, ceiling: Served
) -> None:
    """Same status, content type and keys, the same bill figures: wrk counts
    the two alike, and each answer carries the same work's result."""
    (first_token, first_bill), (second_token, second_bill) = await bench_db.add_bills(2)

    theirs = await pay(ceiling, first_bill, first_token)
    mine = await pay(peer, second_bill, second_token)

    assert (mine.status, mine.content_type) == (200, "application/json")
    assert (theirs.status, theirs.content_type) == (200, "application/json")
    assert mine.body.keys() == theirs.body.keys()
    same = ("meterType", "customerName", "address", "amount", "status", "token", "units", "tariff")
    assert {k: mine.body[k] for k in same} == {k: theirs.body[k] for k in same}
    for key in ("createdAt", "expiresAt", "paidAt"):
        assert mine.body[key].endswith("Z") and theirs.body[key].endswith("Z")


async def test_the_peer_pools_as_many_connections_as_voltpay(empty_postgres_url: str) -> None:
    app = fastapi_peer.create_app(empty_postgres_url)
    async with app.router.lifespan_context(app):
        pool = app.state.sessions.kw["bind"].pool
        assert pool.size() == DEFAULT_POOL_MAX_SIZE
        assert pool._max_overflow == 0


def test_the_peer_is_given_the_database_the_bench_names() -> None:
    assert (
        fastapi_peer.asyncpg_url("postgres://postgres@127.0.0.1:5432/voltpay_bench_x")
        == "postgresql+asyncpg://postgres@127.0.0.1:5432/voltpay_bench_x"
    )
    assert fastapi_peer.asyncpg_url("postgresql://u:secret@h/db") == (
        "postgresql+asyncpg://u:secret@h/db"
    )
