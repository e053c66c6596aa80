"""The database ceiling: voltpay's pay transaction in raw SQL, no actors, no ORM.

``python -m bench.ceilings.database --port N --url postgres://...|sqlite:///...``
serves ``POST /api/Vend/{billId}/pay`` on voltpay's own schema and rows:

1. the bearer token's SHA-256 digest is looked up in ``sessions`` (with the
   user's wallet);
2. in ONE transaction: the bill moves pending → processing (a conditional
   UPDATE), the wallet is debited (``balance = balance - x WHERE balance >= x``)
   and the ledger row is inserted;
3. the bill moves processing → paid and its ``payment_completed`` event is
   written to the outbox (the row voltpay writes, the same shape and size), in
   one transaction; the paid bill is the answer. Nothing publishes the row:
   the ceiling has no event pipeline. Its rows go to ``ceiling_outbox``, a
   copy of voltpay's ``outbox`` table with the same columns and indexes, so
   that voltpay (whose relay shares the database) never sees them.

PostgreSQL goes through voltpay's own connection pool (``postgres_engine.Pool``:
asyncpg connections lent first come, first served and taken back without a
reset round trip), at voltpay's default size, so that the two differ in what
they do per payment, not in how they reach the database;
SQLite through aiosqlite, one writer connection whose transactions take turns
(SQLite has one writer) and one reader connection for the token look-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import orjson
from aiohttp import web

from bench.procs import use_uvloop
from voltpay.models.database import DEFAULT_POOL_MAX_SIZE, SQLITE_PRAGMAS
from voltpay.models.postgres_engine import Pool, create_pool

TOKEN = "12345678901234567890"
UNITS = "0.73"


class Refused(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _rfc3339(moment: Any) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    utc: datetime = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def money_text(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


OUTBOX = "ceiling_outbox"
OUTBOX_COLUMNS = "event_id, event_type, body, created_at, attempts, next_attempt_at"


def completed_event(
    bill_id: uuid.UUID,
    user_id: Any,
    wallet_id: Any,
    started: Any,
    balance: int,
    receipt: str,
    moment: datetime,
) -> tuple[uuid.UUID, bytes]:
    """The id and body of the payment_completed row, as voltpay writes it."""
    event_id = uuid.uuid4()
    body = {
        "eventId": str(event_id),
        "type": "payment_completed",
        "version": 1,
        "occurredAt": _rfc3339(moment),
        "data": {
            "userId": str(user_id),
            "billId": str(bill_id),
            "meterNumber": started[1],
            "customerName": started[2],
            "amount": money_text(int(started[0])),
            "walletId": str(wallet_id),
            "token": TOKEN,
            "units": UNITS,
            "receiptNumber": receipt,
            "walletBalance": money_text(balance),
        },
    }
    return event_id, orjson.dumps(body)


def _bill_view(row: Any, balance: int) -> dict[str, Any]:
    return {
        "billId": str(row[0]),
        "meterNumber": row[1],
        "meterType": row[2],
        "customerName": row[3],
        "address": row[4],
        "amount": money_text(int(row[5])),
        "status": row[6],
        "token": row[7],
        "units": row[8],
        "tariff": money_text(int(row[9])),
        "receiptNumber": row[10],
        "createdAt": _rfc3339(row[11]),
        "expiresAt": _rfc3339(row[12]),
        "paidAt": _rfc3339(row[13]),
        "walletBalance": money_text(balance),
    }


_BILL_COLUMNS = (
    "id, meter_number, meter_type, customer_name, address, amount_minor, status, token, units, "
    "tariff_minor_per_kwh, receipt_number, created_at, expires_at, paid_at"
)


class PostgresPay:
    SESSION = (
        "SELECT s.user_id, w.id FROM sessions s JOIN wallets w ON w.user_id = s.user_id "
        "WHERE s.token_hash = $1 AND s.expires_at > $2 ORDER BY w.created_at LIMIT 1"
    )
    START = (
        "UPDATE bills SET status = 'processing', wallet_id = $3, vend_request_id = $4, "
        "processing_since = $5, updated_at = $5 "
        "WHERE id = $1 AND user_id = $2 AND status = 'pending' AND expires_at > $5 "
        "RETURNING amount_minor, meter_number, customer_name"
    )
    DEBIT = (
        "UPDATE wallets SET balance_minor = balance_minor - $2, updated_at = $3 "
        "WHERE id = $1 AND balance_minor >= $2 RETURNING balance_minor"
    )
    LEDGER = (
        "INSERT INTO ledger_entries (id, wallet_id, kind, amount_minor, balance_after_minor, "
        "bill_id, created_at) VALUES ($1, $2, 'debit', $3, $4, $5, $6)"
    )
    # The update and its outbox row in one statement, as voltpay does it.
    PAID = (
        "WITH moved AS (UPDATE bills SET status = 'paid', token = $2, units = $3, "
        "receipt_number = $4, paid_at = $5, updated_at = $5 "
        f"WHERE id = $1 AND status = 'processing' RETURNING {_BILL_COLUMNS}), "
        f"event AS (INSERT INTO {OUTBOX} ({OUTBOX_COLUMNS}) "
        "SELECT $6, 'payment_completed', $7, $5, 0, $5 FROM moved) "
        "SELECT * FROM moved"
    )

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def pay(self, digest: str, bill_id: uuid.UUID) -> dict[str, Any]:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            session = await conn.fetchrow(self.SESSION, digest, now)
            if session is None:
                raise Refused(401, "unauthorized")
            user_id, wallet_id = session[0], session[1]
            async with conn.transaction():
                started = await conn.fetchrow(
                    self.START, bill_id, user_id, wallet_id, uuid.uuid4().hex, now
                )
                if started is None:
                    raise Refused(409, "bill_not_payable")
                amount = started[0]
                balance = await conn.fetchval(self.DEBIT, wallet_id, amount, now)
                if balance is None:
                    raise Refused(402, "insufficient_funds")
                await conn.execute(
                    self.LEDGER, uuid.uuid4(), wallet_id, -amount, balance, bill_id, now
                )
            paid_at = datetime.now(UTC)
            receipt = f"CEIL-{bill_id.hex[:12]}"
            event_id, body = completed_event(
                bill_id, user_id, wallet_id, started, balance, receipt, paid_at
            )
            row = await conn.fetchrow(
                self.PAID,
                bill_id,
                TOKEN,
                UNITS,
                receipt,
                paid_at,
                event_id,
                body.decode(),
            )
        return _bill_view(row, balance)

    async def close(self) -> None:
        await self._pool.close()


class SqlitePay:
    SESSION = (
        "SELECT s.user_id, w.id FROM sessions s JOIN wallets w ON w.user_id = s.user_id "
        "WHERE s.token_hash = ? AND s.expires_at > ? ORDER BY w.created_at LIMIT 1"
    )
    START = (
        "UPDATE bills SET status = 'processing', wallet_id = ?, vend_request_id = ?, "
        "processing_since = ?, updated_at = ? "
        "WHERE id = ? AND user_id = ? AND status = 'pending' AND expires_at > ? "
        "RETURNING amount_minor, meter_number, customer_name"
    )
    DEBIT = (
        "UPDATE wallets SET balance_minor = balance_minor - ?, updated_at = ? "
        "WHERE id = ? AND balance_minor >= ? RETURNING balance_minor"
    )
    LEDGER = (
        "INSERT INTO ledger_entries (id, wallet_id, kind, amount_minor, balance_after_minor, "
        "bill_id, created_at) VALUES (?, ?, 'debit', ?, ?, ?, ?)"
    )
    PAID = (
        "UPDATE bills SET status = 'paid', token = ?, units = ?, receipt_number = ?, "
        "paid_at = ?, updated_at = ? WHERE id = ? AND status = 'processing' "
        f"RETURNING {_BILL_COLUMNS}"
    )
    OUTBOX = f"INSERT INTO {OUTBOX} ({OUTBOX_COLUMNS}) VALUES (?, 'payment_completed', ?, ?, 0, ?)"

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._turn = asyncio.Lock()

    @staticmethod
    def _ts(moment: datetime) -> str:
        return moment.isoformat(sep=" ", timespec="microseconds")

    async def _one(self, conn: aiosqlite.Connection, sql: str, *args: Any) -> Any:
        rows = list(await conn.execute_fetchall(sql, args))
        return rows[0] if rows else None

    @contextlib.asynccontextmanager
    async def _immediate(self) -> AsyncIterator[None]:
        """One write transaction on the writer: committed, or rolled back on any error."""
        await self._writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self._writer.execute("ROLLBACK")
            raise
        await self._writer.execute("COMMIT")

    async def pay(self, digest: str, bill_id: uuid.UUID) -> dict[str, Any]:
        now = self._ts(datetime.now(UTC))
        session = await self._one(self._reader, self.SESSION, digest, now)
        if session is None:
            raise Refused(401, "unauthorized")
        user_id, wallet_id = session[0], session[1]
        bill = str(bill_id)
        async with self._turn:
            async with self._immediate():
                started = await self._one(
                    self._writer,
                    self.START,
                    wallet_id,
                    uuid.uuid4().hex,
                    now,
                    now,
                    bill,
                    user_id,
                    now,
                )
                if started is None:
                    raise Refused(409, "bill_not_payable")
                amount = int(started[0])
                debited = await self._one(self._writer, self.DEBIT, amount, now, wallet_id, amount)
                if debited is None:
                    raise Refused(402, "insufficient_funds")
                balance = int(debited[0])
                await self._writer.execute(
                    self.LEDGER, (str(uuid.uuid4()), wallet_id, -amount, balance, bill, now)
                )
            moment = datetime.now(UTC)
            paid_at = self._ts(moment)
            receipt = f"CEIL-{bill_id.hex[:12]}"
            event_id, body = completed_event(
                bill_id, user_id, wallet_id, started, balance, receipt, moment
            )
            async with self._immediate():
                row = await self._one(
                    self._writer,
                    self.PAID,
                    TOKEN,
                    UNITS,
                    receipt,
                    paid_at,
                    paid_at,
                    bill,
                )
                if row is not None:
                    await self._writer.execute(
                        self.OUTBOX, (str(event_id), body.decode(), paid_at, paid_at)
                    )
        return _bill_view(row, balance)

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()


async def _sqlite_connection(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma, value in SQLITE_PRAGMAS.items():  # as voltpay's own connection
        await conn.execute(f"PRAGMA {pragma} = {value}")
    return conn


async def _copy_outbox_sqlite(conn: aiosqlite.Connection) -> None:
    """``ceiling_outbox``: voltpay's outbox table and indexes under another name."""
    rows = await conn.execute_fetchall(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'outbox' AND sql IS NOT NULL "
        "ORDER BY type DESC"  # the table before its indexes
    )
    await conn.execute(f"DROP TABLE IF EXISTS {OUTBOX}")
    for (ddl,) in rows:
        ddl = re.sub(r'(TABLE|ON) "?outbox"?', rf"\1 {OUTBOX}", ddl, count=1)
        ddl = re.sub(r'INDEX "?(\w+)"?', r"INDEX ceiling_\1", ddl, count=1)
        await conn.execute(ddl)


async def open_store(url: str, pool_size: int) -> PostgresPay | SqlitePay:
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        writer = await _sqlite_connection(path)
        await _copy_outbox_sqlite(writer)
        return SqlitePay(writer, await _sqlite_connection(path))
    pool = await create_pool(
        url.replace("postgresql://", "postgres://", 1), min_size=pool_size, max_size=pool_size
    )
    async with pool.acquire() as conn:
        await conn.execute(
            f"DROP TABLE IF EXISTS {OUTBOX}; CREATE TABLE {OUTBOX} (LIKE outbox INCLUDING ALL)"
        )
    return PostgresPay(pool)


STORE = web.AppKey("store", object)


async def pay(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _problem(401, "unauthorized")
    try:
        bill_id = uuid.UUID(request.match_info["billId"])
    except ValueError:
        return _problem(404, "not_found")
    store: PostgresPay | SqlitePay = request.app[STORE]  # type: ignore[assignment]
    try:
        view = await store.pay(hashlib.sha256(token.encode()).hexdigest(), bill_id)
    except Refused as refused:
        return _problem(refused.status, refused.code)
    return web.Response(body=orjson.dumps(view), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def _problem(status: int, code: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"status": status, "code": code}),
        status=status,
        content_type="application/problem+json",
    )


def build_app(url: str, pool_size: int) -> web.Application:
    app = web.Application()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(url, pool_size)
        app[STORE] = store
        yield
        await store.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/api/Vend/{billId}/pay", pay)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True, help="postgres://... or sqlite:///abs/path")
    parser.add_argument(
        "--pool",
        type=int,
        default=DEFAULT_POOL_MAX_SIZE,
        help="connection pool size (voltpay's default)",
    )
    args = parser.parse_args()
    use_uvloop()
    web.run_app(
        build_app(args.url, args.pool), host=args.host, port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
