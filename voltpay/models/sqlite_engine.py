"""voltpay's SQLite engine for Tortoise: Tortoise's own client, with fewer
round trips per transaction.

Every statement Tortoise runs on SQLite is a trip to the connection's own
thread and back to the event loop, made under the lock that serializes every
statement of the process; while one transaction holds that lock, no other
statement runs. What this engine changes:

- Tortoise's transactions start with a COMMIT, in case one is still open, and
  then BEGIN. The connection knows whether a transaction is open, so the
  COMMIT is sent only when one is.
- ``Client.run_transaction`` runs a whole transaction, written as a plain
  function of the ``sqlite3`` connection, in the connection's thread: one trip
  for BEGIN, its statements and COMMIT. The payment's two transactions use it;
  ``Client.run_statement`` does the same for one statement outside a
  transaction (every ``sql.rows`` and ``sql.execute`` not inside one).
- Such calls are queued back to back, holding the lock only while queued
  (``_Turns``).

Named as the engine in ``tortoise_config``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.exceptions import IntegrityError, OperationalError, TransactionManagementError

T = TypeVar("T")


class TransactionWrapper(SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            if self._connection.in_transaction:
                await self._connection.commit()
            await self._connection.execute("BEGIN")
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc


class _Turns(asyncio.Lock):
    """The connection's lock, for Tortoise's statements and transactions, which
    hold it while they run; whole transactions (``Client.run_transaction``)
    hold it only while they are queued.

    aiosqlite runs a connection's calls one after another, in the order they
    were queued, in the connection's thread. A whole transaction is one call,
    so once queued nothing can come between its BEGIN and its COMMIT, and it
    need not keep the lock while it runs: the next one is queued at once, and
    the thread goes from one to the next without waiting for the event loop.
    Whoever takes the lock the ordinary way also waits until the queued
    transactions have run, so Tortoise's statements find the connection as
    they expect it: no transaction open, and nobody else's changes counted in
    ``total_changes``, which Tortoise reads before and after a statement.
    """

    def __init__(self) -> None:
        super().__init__()
        self._queued = 0
        self._all_run = asyncio.Event()
        self._all_run.set()

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        if not self._all_run.is_set():
            try:
                await self._all_run.wait()
            except BaseException:
                self.release()
                raise
        return True

    async def queue(self, call: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Queue ``call`` (one call to the connection's thread) in turn, and
        give back its outcome to await; the lock is free again on return."""
        try:
            await super().acquire()
        except BaseException:
            call.close()
            raise
        try:
            # The task queues the call when it first runs: before anything
            # that takes the lock after this, which waits for it.
            outcome = asyncio.ensure_future(call)
            self._queued += 1
            self._all_run.clear()
            outcome.add_done_callback(self._ran)
        finally:
            self.release()
        return outcome

    def _ran(self, _: asyncio.Future[Any]) -> None:
        self._queued -= 1
        if not self._queued:
            self._all_run.set()


class Client(SqliteClient):
    def __init__(self, file_path: str, **kwargs: Any) -> None:
        super().__init__(file_path, **kwargs)
        self._lock = self._turns = _Turns()

    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(TransactionWrapper(self), self._lock)

    async def run_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` as one transaction, in one trip to the connection's thread.

        ``work`` runs in that thread, between BEGIN IMMEDIATE and COMMIT: it may
        only run statements on the ``sqlite3`` connection it is given (no event
        loop, no ORM), and raises to roll everything back; the exception reaches
        the caller. Calls run this way are queued back to back (see ``_Turns``).
        Not to be called inside ``in_transaction()``: that holds the lock this
        takes.
        """
        return await self._queued(_transaction, work)

    async def run_statement(
        self, query: str, values: list[Any]
    ) -> tuple[int, list[dict[str, Any]]]:
        """One statement outside any transaction (SQLite makes it one by
        itself), queued as ``run_transaction``'s calls are: the rows it changed,
        counted as Tortoise counts them, and the rows it returned."""
        return await self._queued(_statement, query, values)

    async def _queued(self, function: Callable[..., T], *args: Any) -> T:
        connection = self._connection
        if connection is None:
            async with self._lock:
                await self.create_connection(with_db=True)  # when no one did yet
            connection = self._connection
            assert connection is not None
        # aiosqlite queues every call of a connection, in order, to its
        # thread through ``_execute``; Tortoise reaches into aiosqlite's
        # private parts the same way (``_conn``). The version range is pinned
        # in setup.cfg, and every SQLite payment test goes through here.
        call = connection._execute(function, connection._conn, *args)  # type: ignore[no-untyped-call]
        outcome = await self._turns.queue(call)
        try:
            # Shielded: a caller that gives up does not take the call off the
            # queue's books while it may still be running.
            result: T = await asyncio.shield(outcome)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(exc) from exc
        except sqlite3.OperationalError as exc:
            raise OperationalError(exc) from exc
        return result


def own_client(conn: BaseDBAsyncClient) -> Client:
    """``conn`` as voltpay's SQLite client, to run a transaction of its own:
    not inside ``in_transaction()``, whose lock it would wait for forever."""
    if not isinstance(conn, Client):
        raise TransactionManagementError(f"a transaction of its own cannot run on {conn!r}")
    return conn


def _statement(
    db: sqlite3.Connection, query: str, values: list[Any]
) -> tuple[int, list[dict[str, Any]]]:
    before = db.total_changes
    found = [dict(row) for row in db.execute(query, values).fetchall()]
    return (db.total_changes - before) or len(found), found


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    if db.in_transaction:
        db.commit()  # as TransactionWrapper.begin: one left open is ended first
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.commit()
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise
    return result


client_class = Client
