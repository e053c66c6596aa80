"""voltpay's PostgreSQL engine: connections handed out first come, first served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from tortoise import connections

from voltpay.models import sql
from voltpay.models.database import close_database, open_database
from voltpay.models.postgres_engine import Client, FairPool, create_pool


async def _no_reset(connection: Any) -> None:
    """A reset that does not wait (as voltpay's own outside a transaction)."""


@pytest.fixture
async def fair_pool(postgres_url: str) -> AsyncIterator[FairPool]:
    pool = await create_pool(postgres_url, min_size=1, max_size=1, reset=_no_reset)
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


async def test_a_waiter_is_served_before_a_later_caller(fair_pool: FairPool) -> None:
    assert await overtaken(fair_pool) == ["waiter", "late"]


async def test_asyncpgs_own_pool_lets_the_later_caller_overtake(postgres_url: str) -> None:
    # Why FairPool exists; if this starts failing, asyncpg fixed it upstream.
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=1, reset=_no_reset)
    try:
        assert await overtaken(pool) == ["late", "waiter"]
    finally:
        await pool.close()


async def test_the_whole_pool_is_usable_at_once(postgres_url: str) -> None:
    pool = await create_pool(postgres_url, min_size=1, max_size=3, reset=_no_reset)
    try:
        held = [await asyncio.wait_for(pool.acquire(), 5) for _ in range(3)]
        assert len({id(connection) for connection in held}) == 3
        for connection in held:
            await pool.release(connection)
    finally:
        await pool.close()


def only_turn_left(pool: FairPool) -> Callable[[], Awaitable[bool]]:
    async def free() -> bool:
        """Whether a connection can still be had at once."""
        try:
            connection = await asyncio.wait_for(pool.acquire(), 0.2)
        except TimeoutError:
            return False
        await pool.release(connection)
        return True

    return free


async def test_a_connection_released_twice_frees_one_turn(fair_pool: FairPool) -> None:
    free = only_turn_left(fair_pool)
    connection = await fair_pool.acquire()
    await fair_pool.release(connection)
    await fair_pool.release(connection)  # asyncpg ignores the second release
    first = await fair_pool.acquire()
    assert not await free()  # the second release gave no extra turn
    await fair_pool.release(first)
    assert await free()


async def test_a_caller_that_gives_up_waiting_takes_no_turn(fair_pool: FairPool) -> None:
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


async def test_voltpay_runs_on_the_fair_pool(postgres_url: str) -> None:
    await open_database(postgres_url, pool_max_size=4, migrate_first=False)
    try:
        conn = connections.get("default")
        assert isinstance(conn, Client)
        found = await asyncio.gather(*(sql.rows(conn, "SELECT 1 AS one") for _ in range(20)))
        assert found == [[{"one": 1}]] * 20
        assert isinstance(conn._pool, FairPool)
        assert conn._pool.get_max_size() == 4
    finally:
        await close_database()
