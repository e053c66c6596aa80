"""voltpay's PostgreSQL engine for Tortoise: Tortoise's own asyncpg client, on
a pool of voltpay's own that lends its connections in the order they were
asked for and takes them back without a round trip.

Why not asyncpg's pool:

* it keeps its free connections in an ``asyncio.LifoQueue``. When a
  connection comes back, the first waiter is woken, but any task that asks
  before that waiter runs finds the connection free and takes it; the woken
  waiter finds the queue empty and goes to the back of the line. Under load
  some requests lose that race again and again, and the tail latency grows
  with nothing slow in the database;
* it resets every connection it takes back: a round trip running
  ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``, one
  more trip for every statement outside a transaction. voltpay changes no
  session state (no advisory locks, cursors outside a transaction, LISTEN or
  SET), so there is nothing to reset;
* lending and taking back cost CPU on every statement: a proxy object, a
  timer re-armed, a future and a Task (``asyncio.shield``) for every
  release.

``Pool`` hands a returned connection straight to the first waiter, or keeps
it; a connection that comes back closed, inside a transaction or in the
middle of a cancelled query is closed instead, and its place goes to the
first waiter, who opens a new one. It lends plain ``asyncpg.Connection``
objects, which is all Tortoise asks of a pool (``acquire``, ``release``,
``expire_connections``, ``close``, ``terminate``).

Named as the engine in ``tortoise_config``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Generator, Sequence
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
from tortoise.backends.asyncpg.client import AsyncpgDBClient

# Idle connections beyond min_size are closed after this long, as asyncpg's
# pool does by default.
MAX_IDLE_SECONDS = 300.0


class Pool:
    """Up to ``max_size`` connections, lent first come, first served."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        min_size: int = 1,
        max_size: int = 10,
        max_idle_seconds: float = MAX_IDLE_SECONDS,
        loop: Any = None,  # Tortoise passes one; connections use the running loop
        **connect_kwargs: Any,
    ) -> None:
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError("pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._max_idle = max_idle_seconds
        self._connect_kwargs = connect_kwargs
        self._idle: collections.deque[tuple[asyncpg.Connection, float]] = collections.deque()
        # A waiter's future gets a connection, or None: "a place came free,
        # open a connection in it".
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
            collections.deque()
        )
        self._lent: dict[asyncpg.Connection, int] = {}  # connection -> its generation
        self._size = 0  # connections open or being opened, lent or idle
        self._generation = 0
        self._closing = False
        self._emptied = asyncio.Event()  # set once closing and no connection is left

    async def open(self) -> Pool:
        """Open ``min_size`` connections."""
        opened = await asyncio.gather(*(self._connect() for _ in range(self._min_size)))
        now = time.monotonic()
        for connection in opened:
            self._size += 1
            self._idle.append((connection, now))
        return self

    def get_size(self) -> int:
        return self._size

    def get_max_size(self) -> int:
        return self._max_size

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        """``await pool.acquire()`` (then ``release``) or ``async with pool.acquire()``."""
        return _Acquire(self, timeout)

    async def _acquire(self, timeout: float | None) -> asyncpg.Connection:
        if timeout is None:
            return await self._take()
        async with asyncio.timeout(timeout):
            return await self._take()

    async def _take(self) -> asyncpg.Connection:
        if self._closing:
            raise asyncpg.InterfaceError("the pool is closing")
        idle = self._idle
        while idle and not self._waiters:
            connection, _ = idle.pop()  # the most recently used: its caches are warm
            if connection.is_closed():
                self._shrink()
                continue
            self._lent[connection] = self._generation
            return connection
        if self._size < self._max_size and not self._waiters:
            self._size += 1
            return await self._open_in_place()
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if not waiter.done():
                self._waiters.remove(waiter)
            elif not waiter.cancelled():
                # Handed over just as the caller gave up: pass it on.
                given = waiter.result()
                if given is None:
                    self._free_place()
                else:
                    self._lent.pop(given, None)
                    self._return(given)
            raise
        if handed is None:
            return await self._open_in_place()
        return handed

    async def _open_in_place(self) -> asyncpg.Connection:
        """Open a connection in a place already counted in ``_size``."""
        try:
            connection = await self._connect()
        except BaseException:
            self._free_place()
            raise
        if self._closing:
            connection.terminate()
            self._free_place()
            raise asyncpg.InterfaceError("the pool is closing")
        self._lent[connection] = self._generation
        return connection

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._dsn, **self._connect_kwargs)

    async def release(self, connection: asyncpg.Connection) -> None:
        """Take a connection back. A second release, or of a connection that
        is not this pool's, does nothing."""
        generation = self._lent.pop(connection, None)
        if generation is None:
            return
        if (
            self._closing
            or generation != self._generation
            or connection.is_closed()
            or connection.is_in_transaction()
            or connection._protocol._is_cancelling()
        ):
            # Its state is unknown (a transaction left open, a query cut off)
            # or it is not wanted: closing it rolls back whatever it held.
            connection.terminate()
            self._free_place()
            return
        self._return(connection)

    def _return(self, connection: asyncpg.Connection) -> None:
        """To the first waiter, or to the idle connections."""
        waiter = self._first_waiter()
        if waiter is not None:
            self._lent[connection] = self._generation
            waiter.set_result(connection)
            return
        now = time.monotonic()
        self._idle.append((connection, now))
        self._close_stale(now)

    def _close_stale(self, now: float) -> None:
        """The longest idle connection, if it has been idle too long and the
        pool holds more than its minimum."""
        idle = self._idle
        if idle and self._size > self._min_size and now - idle[0][1] > self._max_idle:
            stale, _ = idle.popleft()
            stale.terminate()
            self._shrink()

    def _free_place(self) -> None:
        """A connection is gone: its place goes to the first waiter, who opens
        a new one, or back to the pool."""
        waiter = self._first_waiter()
        if waiter is not None:
            waiter.set_result(None)
            return
        self._shrink()

    def _first_waiter(self) -> asyncio.Future[asyncpg.Connection | None] | None:
        """The longest waiting caller still waiting, taken off the line."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _shrink(self) -> None:
        self._size -= 1
        if self._closing and self._size == 0:
            self._emptied.set()

    async def expire_connections(self) -> None:
        """Connections lent now are closed when they come back; idle ones at once."""
        self._generation += 1
        await self._close_idle()

    async def close(self) -> None:
        """Refuse new callers, close the idle connections and wait for the
        lent ones to come back (each is closed as it does)."""
        self._closing = True
        self._fail_waiters()
        if self._size == 0:
            self._emptied.set()
        await self._close_idle()
        await self._emptied.wait()

    async def _close_idle(self) -> None:
        while self._idle:
            connection, _ = self._idle.pop()
            self._shrink()
            await connection.close()

    def terminate(self) -> None:
        """Close every connection now, lent or not."""
        self._closing = True
        self._fail_waiters()
        for connection, _ in self._idle:
            connection.terminate()
        for connection in list(self._lent):
            connection.terminate()
        self._idle.clear()
        self._lent.clear()
        self._size = 0
        self._emptied.set()

    def _fail_waiters(self) -> None:
        while (waiter := self._first_waiter()) is not None:
            waiter.set_exception(asyncpg.InterfaceError("the pool is closing"))


class _Acquire:
    __slots__ = ("_connection", "_pool", "_timeout")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._pool._acquire(self._timeout).__await__()

    async def __aenter__(self) -> asyncpg.Connection:
        self._connection = await self._pool._acquire(self._timeout)
        return self._connection

    async def __aexit__(self, *exc_info: object) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)


async def create_pool(dsn: str | None = None, **kwargs: Any) -> Pool:
    """An open ``Pool``; takes ``asyncpg.connect``'s arguments besides its own."""
    return await Pool(dsn, **kwargs).open()


class Client(AsyncpgDBClient):
    async def create_pool(self, **kwargs: Any) -> Pool:
        return await create_pool(None, **kwargs)

    async def run_statement(self, query: str, values: Sequence[Any]) -> list[dict[str, Any]]:
        """One statement outside any transaction, on a connection of the pool:
        the rows it returned, with asyncpg's errors translated as Tortoise
        translates them.

        What ``execute_query_dict`` does, less the layers around it (the
        connection wrapper, the pool's first-use check, a debug log call per
        statement), which every statement of a payment would otherwise pay for.
        """
        # (Tortoise annotates the translator as returning an Exception.)
        return cast(list[dict[str, Any]], await self._translate_exceptions(_fetch, query, values))

    async def run_change(self, query: str, values: Sequence[Any]) -> int:
        """One statement outside any transaction that returns no rows: how
        many rows it changed, by the same short way as ``run_statement``.
        (Tortoise's ``execute_query`` counts 0 for every INSERT: it reads the
        second word of "INSERT 0 3".)"""
        return cast(int, await self._translate_exceptions(_change, query, values))


async def _pool_of(client: Client) -> Pool:
    if client._pool is None:  # nobody has used the client yet: Tortoise opens the pool
        async with client.acquire_connection():
            pass
    pool: Pool = client._pool  # type: ignore[assignment]
    return pool


async def _fetch(client: Client, query: str, values: Sequence[Any]) -> list[dict[str, Any]]:
    async with (await _pool_of(client)).acquire() as connection:
        return [dict(row) for row in await connection.fetch(query, *values)]


async def _change(client: Client, query: str, values: Sequence[Any]) -> int:
    async with (await _pool_of(client)).acquire() as connection:
        status: str = await connection.execute(query, *values)
    # "INSERT 0 3", "UPDATE 2", "DELETE 0": the count is the last word.
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


client_class = Client
