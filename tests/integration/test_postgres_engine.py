"""voltpay's PostgreSQL engine: its own pool, lending connections first come,
first served and taking them back without a round trip."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from tortoise import connections
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from voltpay.models import sql
from voltpay.models.database import close_database, open_database
from voltpay.models.postgres_engine import Client, Pool, create_pool


async def _no_reset(connection: Any) -> None:
    """No reset query, so that asyncpg's pool takes a connection back as
    quickly as voltpay's does."""


@pytest.fixture
async def fair_pool(postgres_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(postgres_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def overtaken(pool: Any) -> list[str]:
    """The order in which a waiter and a late caller get the pool's only
    connection, when the late caller asks just after it was released but
    before the woken waiter has run: the moment a busy event loop makes
    common."""
    order: list[str] = []

    async def take(name: str) -> None:
        async with pool.acquire():
            order.append(name)

    held = await pool.acquire()
    waiter = asyncio.create_task(take("waiter"))
    await asyncio.sleep(0.01)  # the waiter is now waiting for the connection
    late: list[asyncio.Task[None]] = []
    # Runs after release() has scheduled its work and before that work puts
    # the connection back, so the late caller's first step comes just after it.
    asyncio.get_running_loop().call_soon(lambda: late.append(asyncio.create_task(take("late"))))
    await pool.release(held)
    await asyncio.wait_for(asyncio.gather(waiter, *late), 5)
    return order


async def test_a_waiter_is_served_before_a_later_caller(fair_pool: Pool) -> None:
    assert await overtaken(fair_pool) == ["waiter", "late"]


async def test_asyncpgs_own_pool_lets_the_later_caller_overtake(postgres_url: str) -> None:
    # Why Pool exists; if this starts failing, asyncpg fixed it upstream.
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=1, reset=_no_reset)
    try:
        assert await overtaken(pool) == ["late", "waiter"]
    finally:
        await pool.close()


async def test_the_whole_pool_is_usable_at_once(postgres_url: str) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=3)
    try:
        held = [await asyncio.wait_for(pool.acquire(), 5) for _ in range(3)]
        assert len({id(connection) for connection in held}) == 3
        for connection in held:
            await pool.release(connection)
    finally:
        await pool.close()


def only_turn_left(pool: Pool) -> Callable[[], Awaitable[bool]]:
    async def free() -> bool:
        """Whether a connection can still be had at once."""
        try:
            connection = await asyncio.wait_for(pool.acquire(), 0.2)
        except TimeoutError:
            return False
        await pool.release(connection)
        return True

    return free


async def test_a_connection_released_twice_frees_one_turn(fair_pool: Pool) -> None:
    free = only_turn_left(fair_pool)
    connection = await fair_pool.acquire()
    await fair_pool.release(connection)
    await fair_pool.release(connection)  # asyncpg ignores the second release
    first = await fair_pool.acquire()
    assert not await free()  # the second release gave no extra turn
    await fair_pool.release(first)
    assert await free()


async def test_a_caller_that_gives_up_waiting_takes_no_turn(fair_pool: Pool) -> None:
    free = only_turn_left(fair_pool)
    held = await fair_pool.acquire()
    with pytest.raises(TimeoutError):
        await fair_pool.acquire(timeout=0.05)
    cancelled = asyncio.ensure_future(fair_pool.acquire())
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await fair_pool.release(held)
    assert await free()
    assert await free()


async def test_voltpay_runs_on_its_own_pool(postgres_url: str) -> None:
    await open_database(postgres_url, pool_max_size=4, migrate_first=False)
    try:
        conn = connections.get("default")
        assert isinstance(conn, Client)
        found = await asyncio.gather(*(sql.rows(conn, "SELECT 1 AS one") for _ in range(20)))
        assert found == [[{"one": 1}]] * 20
        assert isinstance(conn._pool, Pool)
        assert conn._pool.get_max_size() == 4
    finally:
        await close_database()


async def test_the_url_may_size_the_pool_and_the_migrations_still_run(
    postgres_url: str,
) -> None:
    """The migration step opens a small pool of its own: a ``minsize`` above
    its size in the URL once stopped the daemon before it served."""
    await open_database(f"{postgres_url}?minsize=5", pool_max_size=6, migrate_first=True)
    try:
        conn = connections.get("default")
        assert isinstance(conn, Client)
        assert await sql.rows(conn, "SELECT 1 AS one") == [{"one": 1}]
        assert isinstance(conn._pool, Pool)
        assert (conn._pool.get_size(), conn._pool.get_max_size()) == (5, 6)
    finally:
        await close_database()


_NEW_USER = (
    "INSERT INTO users (id, username, password_hash, phone_number, created_at) "
    "VALUES ($1, $2, 'x', '+2348000000000', now()) RETURNING id"
)


async def test_a_statement_on_its_own_errs_as_through_tortoise(empty_postgres_url: str) -> None:
    await open_database(empty_postgres_url, pool_max_size=2, migrate_first=False)
    try:
        conn = connections.get("default")
        user_id = uuid.uuid4()
        assert await sql.rows(conn, _NEW_USER, user_id, "ada") == [{"id": user_id}]
        with pytest.raises(IntegrityError):
            await sql.rows(conn, _NEW_USER, uuid.uuid4(), "ada")
        with pytest.raises(OperationalError):
            await sql.rows(conn, "SELECT * FROM no_such_table")
        # Every statement gave its connection back, failed ones too.
        assert isinstance(conn._pool, Pool)
        assert not conn._pool._lent
    finally:
        await close_database()


_NEW_USERS = (
    "INSERT INTO users (id, username, password_hash, phone_number, created_at) "
    "VALUES ($1, $2, 'x', '+2348000000000', now()), ($3, $4, 'x', '+2348000000001', now())"
)


async def test_a_change_on_its_own_counts_its_rows_and_errs_as_through_tortoise(
    empty_postgres_url: str,
) -> None:
    await open_database(empty_postgres_url, pool_max_size=2, migrate_first=False)
    try:
        conn = connections.get("default")
        # The first statement opens the pool the long way; the rest go short.
        first, second = uuid.uuid4(), uuid.uuid4()
        assert await sql.execute(conn, _NEW_USERS, first, "ada", second, "grace") == 2
        assert await sql.execute(conn, _NEW_USERS, uuid.uuid4(), "alan", uuid.uuid4(), "kay") == 2
        changed = await sql.execute(
            conn, "UPDATE users SET phone_number = $1 WHERE id IN ($2, $3)", "+1", first, second
        )
        assert changed == 2
        assert await sql.execute(conn, "DELETE FROM users WHERE id = $1", uuid.uuid4()) == 0
        with pytest.raises(IntegrityError):
            await sql.execute(conn, _NEW_USERS, uuid.uuid4(), "ada", uuid.uuid4(), "edsger")
        with pytest.raises(OperationalError):
            await sql.execute(conn, "UPDATE no_such_table SET x = $1", 1)
        phones = await sql.rows(conn, "SELECT phone_number FROM users ORDER BY phone_number")
        assert [row["phone_number"] for row in phones] == [
            "+1",
            "+1",
            "+2348000000000",
            "+2348000000001",
        ]
        assert isinstance(conn._pool, Pool)
        assert not conn._pool._lent
    finally:
        await close_database()


async def test_a_statement_inside_a_transaction_stays_in_it(empty_postgres_url: str) -> None:
    await open_database(empty_postgres_url, pool_max_size=2, migrate_first=False)
    try:
        with pytest.raises(RuntimeError):
            async with in_transaction() as conn:
                await sql.rows(conn, _NEW_USER, uuid.uuid4(), "grace")
                raise RuntimeError("roll it back")
        assert await sql.rows(connections.get("default"), "SELECT id FROM users") == []
    finally:
        await close_database()


async def test_a_released_connection_costs_no_round_trip(postgres_url: str) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=1)
    try:
        connection = await pool.acquire()
        await connection.fetchval("SELECT 1")
        protocol = connection._protocol
        queries = protocol.queries_count
        await pool.release(connection)
        assert protocol.queries_count == queries  # asyncpg's own reset would be one more
    finally:
        await pool.close()


async def test_a_connection_back_inside_a_transaction_is_closed_not_lent(
    postgres_url: str,
) -> None:
    table = f"left_open_{uuid.uuid4().hex}"
    pool = await create_pool(postgres_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as setup:
            await setup.execute(f"CREATE TABLE {table} (n int)")
        connection = await pool.acquire()
        await connection.execute("BEGIN")
        await connection.execute(f"INSERT INTO {table} VALUES (1)")
        await pool.release(connection)
        assert connection.is_closed()
        async with pool.acquire(timeout=5) as again:
            assert again is not connection
            assert await again.fetchval(f"SELECT count(*) FROM {table}") == 0
            await again.execute(f"DROP TABLE {table}")
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_a_closed_connections_place_goes_to_a_waiter(postgres_url: str) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=1)
    try:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        held.terminate()  # the server went away, say
        await pool.release(held)
        replacement = await waiter
        assert replacement is not held
        assert await replacement.fetchval("SELECT 1") == 1
        await pool.release(replacement)
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_an_idle_connection_closed_meanwhile_is_not_lent(postgres_url: str) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=2)
    try:
        connection = await pool.acquire()
        await pool.release(connection)
        connection.terminate()
        async with pool.acquire(timeout=5) as fresh:
            assert fresh is not connection
            assert await fresh.fetchval("SELECT 1") == 1
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_connections_idle_too_long_are_closed_down_to_the_minimum(
    postgres_url: str,
) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=3, max_idle_seconds=0.05)
    try:
        held = [await pool.acquire() for _ in range(3)]
        for connection in held:
            await pool.release(connection)
        assert pool.get_size() == 3
        await asyncio.sleep(0.1)
        for _ in range(3):
            async with pool.acquire():
                pass
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_closing_waits_for_lent_connections_and_refuses_new_callers(
    postgres_url: str,
) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=1)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    with pytest.raises(asyncpg.InterfaceError):
        await waiter
    with pytest.raises(asyncpg.InterfaceError):
        await pool.acquire()
    await pool.release(held)
    await asyncio.wait_for(closing, 5)
    assert held.is_closed()
    assert pool.get_size() == 0


async def test_expired_connections_are_replaced(postgres_url: str) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=2)
    try:
        lent = await pool.acquire()
        idle = await pool.acquire()
        await pool.release(idle)
        await pool.expire_connections()
        assert idle.is_closed()
        await pool.release(lent)
        assert lent.is_closed()
        async with pool.acquire(timeout=5) as fresh:
            assert fresh not in (lent, idle)
            assert await fresh.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
