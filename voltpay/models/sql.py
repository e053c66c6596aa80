"""Hand-written SQL for the hot money path, on both dialects.

The statements are written once with PostgreSQL's ``$n`` placeholders, each
used once and in order, so that SQLite's ``?`` form is a plain substitution.
Rows come back as model instances through Tortoise's own field conversion.
Both SQLite (3.35+) and PostgreSQL support ``UPDATE ... RETURNING``, which
saves the read-after-write that the ORM would need.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from voltpay.models import postgres_engine, sqlite_engine

M = TypeVar("M", bound=Model)
_PLACEHOLDER = re.compile(r"\$\d+")


@functools.lru_cache(maxsize=256)
def placeholders(count: int, start: int = 1) -> str:
    """``$start, $start+1, ...``: ``count`` placeholders for an IN list."""
    return ", ".join(f"${n}" for n in range(start, start + count))


@functools.lru_cache(maxsize=64)
def value_rows(rows: int, columns: int) -> str:
    """``($1, $2), ($3, $4)``: a multi-row VALUES list."""
    return ", ".join(f"({placeholders(columns, 1 + row * columns)})" for row in range(rows))


def is_sqlite(conn: BaseDBAsyncClient) -> bool:
    return str(conn.capabilities.dialect) == "sqlite"


@functools.lru_cache(maxsize=256)
def _for_sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub("?", sql)


def _param(value: Any, sqlite: bool) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if sqlite and isinstance(value, datetime):
        # The form Tortoise stores, so text comparisons order correctly.
        return value.isoformat(" ")
    return value


def for_sqlite(sql: str, *values: Any) -> tuple[str, list[Any]]:
    """The statement and its parameters as the ``sqlite3`` module takes them,
    for a transaction run in the connection's thread (``Client.run_transaction``)."""
    return _for_sqlite(sql), [_param(v, True) for v in values]


def _prepare(conn: BaseDBAsyncClient, sql: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    if is_sqlite(conn):
        return for_sqlite(sql, *values)
    return sql, [_param(v, False) for v in values]


async def rows(conn: BaseDBAsyncClient, sql: str, *values: Any) -> list[dict[str, Any]]:
    if isinstance(conn, sqlite_engine.Client):
        _, found = await conn.run_statement(*for_sqlite(sql, *values))
        return found
    if isinstance(conn, postgres_engine.Client):
        return await conn.run_statement(sql, [_param(v, False) for v in values])
    query, params = _prepare(conn, sql, values)
    return list(await conn.execute_query_dict(query, params))


async def execute(conn: BaseDBAsyncClient, sql: str, *values: Any) -> int:
    if isinstance(conn, sqlite_engine.Client):
        changed, _ = await conn.run_statement(*for_sqlite(sql, *values))
        return changed
    if isinstance(conn, postgres_engine.Client):
        return await conn.run_change(sql, [_param(v, False) for v in values])
    query, params = _prepare(conn, sql, values)
    changed, _ = await conn.execute_query(query, params)
    return int(changed)


async def models(conn: BaseDBAsyncClient, model: type[M], sql: str, *values: Any) -> list[M]:
    return [model._init_from_db(**row) for row in await rows(conn, sql, *values)]
