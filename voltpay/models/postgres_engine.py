"""voltpay's PostgreSQL engine for Tortoise: Tortoise's own asyncpg client, on a
pool that hands its connections out in the order they were asked for.

asyncpg's pool keeps its free connections in an ``asyncio.LifoQueue``. When
a connection comes back, the first waiter is woken, but any task that asks
before that waiter runs finds the connection free and takes it; the woken
waiter finds the queue empty and goes to the back of the line. Under load
(many more requests than connections) some requests lose that race again and
again: paying at 64 connections, p99 was twice the median, and three times
it for the bench's raw-SQL ceiling, with nothing slow in the database (the
figures are in bench/results/). ``FairPool`` lets only as many tasks reach the
queue as it holds connections, through an ``asyncio.Semaphore``, which wakes
its waiters first come, first served and hands a freed turn straight to the
next one; the queue itself then never makes anyone wait.

Named as the engine in ``tortoise_config``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from tortoise.backends.asyncpg.client import AsyncpgDBClient

# What asyncpg.create_pool fills in for the pool's own settings (max_queries,
# record_class, ...); Tortoise passes the rest.
_POOL_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(asyncpg.create_pool).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    and parameter.default is not inspect.Parameter.empty
}


class FairPool(asyncpg.Pool):  # type: ignore[misc]
    """An asyncpg pool whose callers get connections first come, first served."""

    def __init__(self, *connect_args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*connect_args, max_size=max_size, **kwargs)
        self._turns = asyncio.Semaphore(max_size)
        self._lent: set[Any] = set()

    async def _acquire(self, timeout: float | None) -> Any:
        # Every way in (``await pool.acquire()``, ``async with``, ``pool.fetch``)
        # goes through here.
        if timeout is None:
            await self._turns.acquire()
        else:
            started = time.monotonic()
            async with asyncio.timeout(timeout):
                await self._turns.acquire()
            timeout = max(0.0, timeout - (time.monotonic() - started))
        try:
            connection = await super()._acquire(timeout)
        except BaseException:
            self._turns.release()
            raise
        self._lent.add(connection)
        return connection

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        try:
            await super().release(connection, timeout=timeout)
        finally:
            # A connection released twice, or not from this pool, frees no turn.
            if connection in self._lent:
                self._lent.discard(connection)
                self._turns.release()


def create_pool(dsn: str | None = None, **kwargs: Any) -> FairPool:
    """``asyncpg.create_pool`` with the same settings and defaults, for a ``FairPool``."""
    return FairPool(dsn, **(_POOL_DEFAULTS | kwargs))


class Client(AsyncpgDBClient):
    async def create_pool(self, **kwargs: Any) -> FairPool:
        pool: FairPool = await create_pool(None, **kwargs)
        return pool


client_class = Client
