"""voltpay's SQLite engine for Tortoise: Tortoise's own client, with one
round trip less per transaction.

Tortoise's SQLite transactions start with a COMMIT, in case one is still
open, and then BEGIN: two trips to the connection's thread, both under the
lock that serializes every statement of the process. The connection knows
whether a transaction is open, so the COMMIT is sent only when one is. A
payment runs two transactions, so this is two trips fewer while the lock is
held. Named as the engine in ``tortoise_config``.
"""

from __future__ import annotations

import sqlite3

from tortoise.backends.base.client import TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.exceptions import TransactionManagementError


class TransactionWrapper(SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            if self._connection.in_transaction:
                await self._connection.commit()
            await self._connection.execute("BEGIN")
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc


class Client(SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(TransactionWrapper(self), self._lock)


client_class = Client
