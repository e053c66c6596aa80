"""Bench data written straight into voltpay's schema (created by ``voltpay migrate``).

Users get one wallet with a large balance and a session whose bearer token is
known to the bench (stored, as voltpay stores it, only as its SHA-256 digest);
pending bills are made per measurement, spread over all users, so each pay
request hits a different bill and concurrent requests rarely share a wallet.
The same rows serve voltpay and the database ceiling.
"""

from __future__ import annotations

import abc
import asyncio
import json
import random
import secrets
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from voltpay.http.auth import hash_password, token_digest
from voltpay.models.users import CUSTOMER, fold

BENCH_PASSWORD = "bench-password-1"
BALANCE_MINOR = 10**13
BILL_AMOUNT_MINOR = 5_000
TARIFF_MINOR_PER_KWH = 6_800
BILL_TTL = timedelta(hours=6)
SESSION_TTL = timedelta(days=2)


@dataclass(frozen=True)
class BenchUser:
    user_id: uuid.UUID
    wallet_id: uuid.UUID
    token: str


@dataclass(frozen=True)
class PipelineRow:
    created_at: datetime
    sent_at: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(moment: datetime) -> str:
    """How Tortoise stores a datetime in SQLite."""
    return moment.isoformat(sep=" ", timespec="microseconds")


def _parse(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _payment_completed_body(event_id: uuid.UUID, user: BenchUser, now: datetime) -> str:
    envelope = {
        "eventId": str(event_id),
        "type": "payment_completed",
        "version": 1,
        "occurredAt": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "data": {
            "userId": str(user.user_id),
            "billId": str(uuid.uuid4()),
            "meterNumber": "45012345678",
            "customerName": "Bench Customer",
            "amount": "50.00",
            "walletId": str(user.wallet_id),
            "token": "12345678901234567890",
            "units": "0.73",
            "receiptNumber": "SIM-000000000001",
            "walletBalance": "1000.00",
        },
    }
    return json.dumps(envelope, separators=(",", ":"))


class BenchDb(abc.ABC):
    """The bench's direct access to one voltpay database."""

    users: list[BenchUser]

    def __init__(self) -> None:
        self.users = []
        self.watch_from = 0
        self._rng = random.Random(7)

    @property
    @abc.abstractmethod
    def url(self) -> str: ...

    @abc.abstractmethod
    async def _insert(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert rows given in Python terms (UUIDs, aware datetimes)."""

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _after_bulk_write(self) -> None:
        """What the database's own upkeep would do after a bulk write."""

    async def seed_users(self, count: int) -> list[BenchUser]:
        password_hash = await hash_password(BENCH_PASSWORD)
        now = _now()
        users, wallets, sessions = [], [], []
        for number in range(count):
            user = BenchUser(uuid.uuid4(), uuid.uuid4(), secrets.token_urlsafe(32))
            username = f"bench_{number:06d}_{secrets.token_hex(3)}"
            users.append(
                (
                    user.user_id,
                    username,
                    fold(username),
                    password_hash,
                    f"+23480{number:08d}",
                    CUSTOMER,
                    now,
                )
            )
            wallets.append((user.wallet_id, user.user_id, BALANCE_MINOR, "NGN", now, now))
            sessions.append((token_digest(user.token), user.user_id, now, now + SESSION_TTL))
            self.users.append(user)
        await self._insert(
            "users",
            (
                "id",
                "username",
                "username_key",
                "password_hash",
                "phone_number",
                "role",
                "created_at",
            ),
            users,
        )
        await self._insert(
            "wallets",
            ("id", "user_id", "balance_minor", "currency", "created_at", "updated_at"),
            wallets,
        )
        await self._insert(
            "sessions", ("token_hash", "user_id", "created_at", "expires_at"), sessions
        )
        await self._after_bulk_write()
        return list(self.users)

    async def add_bills(
        self, count: int, users: Sequence[BenchUser] | None = None
    ) -> list[tuple[str, uuid.UUID]]:
        """``count`` new pending bills over all users (or over ``users``), in a
        shuffled order of users; returns (bearer token, bill id) pairs."""
        now = _now()
        rows, pairs = [], []
        order = list(self.users if users is None else users)
        for number in range(count):
            if number % len(order) == 0:
                self._rng.shuffle(order)
            user = order[number % len(order)]
            bill_id = uuid.uuid4()
            meter = f"45{self._rng.randrange(10**9):09d}"
            rows.append(
                (
                    bill_id,
                    user.user_id,
                    meter,
                    "prepaid",
                    "Bench Customer",
                    "1 Bench Street, Ikeja, Lagos",
                    BILL_AMOUNT_MINOR,
                    "pending",
                    TARIFF_MINOR_PER_KWH,
                    now,
                    now + BILL_TTL,
                    now,
                )
            )
            pairs.append((user.token, bill_id))
        await self._insert(
            "bills",
            (
                "id",
                "user_id",
                "meter_number",
                "meter_type",
                "customer_name",
                "address",
                "amount_minor",
                "status",
                "tariff_minor_per_kwh",
                "created_at",
                "expires_at",
                "updated_at",
            ),
            rows,
        )
        await self._after_bulk_write()
        return pairs

    async def expire_pending(self) -> None:
        """Retire the bills a run did not use, so pending bills stay few."""
        now = _now()
        await self._execute(
            "UPDATE bills SET status = 'expired', updated_at = {0} WHERE status = 'pending'",
            now,
        )

    async def insert_backlog(self, count: int) -> None:
        """``count`` payment_completed events waiting in the outbox, as a relay
        finds them after SNS was down for a while."""
        now = _now()
        rows = []
        for number in range(count):
            event_id = uuid.uuid4()
            user = self.users[number % len(self.users)]
            rows.append(
                (
                    event_id,
                    "payment_completed",
                    _payment_completed_body(event_id, user, now),
                    now,
                    0,
                    now,
                )
            )
        await self._insert(
            "outbox",
            ("event_id", "event_type", "body", "created_at", "attempts", "next_attempt_at"),
            rows,
        )
        await self._after_bulk_write()

    async def outbox_mark(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) FROM outbox")
        return int(rows[0][0])

    async def pipeline_rows(self, after_id: int) -> list[PipelineRow]:
        """payment_completed events written after ``after_id``: when committed
        and when their SMS was recorded as sent."""
        rows = await self._fetch(
            "SELECT o.created_at, n.sent_at FROM outbox o "
            "LEFT JOIN notifications n ON n.event_id = o.event_id "
            "WHERE o.id > {0} AND o.event_type = 'payment_completed'",
            after_id,
        )
        return [PipelineRow(_parse(c) or _now(), _parse(s)) for c, s in rows]

    async def events_waiting(self) -> int:
        """Events written since ``watch_from`` not yet through the pipeline:
        every event ends as one notification, sent (or failed for good)."""
        rows = await self._fetch(
            "SELECT COUNT(*) FROM outbox o LEFT JOIN notifications n ON n.event_id = o.event_id "
            "WHERE o.id > {0} AND (n.status IS NULL OR n.status = 'queued')",
            self.watch_from,
        )
        return int(rows[0][0])

    async def watch_from_now(self) -> None:
        """Events already written are someone else's business (an endpoint
        that is gone may hold them)."""
        self.watch_from = await self.outbox_mark()

    async def notifications_sent(self) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM notifications WHERE status = 'sent'")
        return int(rows[0][0])

    async def wait_drained(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self.events_waiting() <= 0:
                return True
            await asyncio.sleep(0.25)
        return False


class PostgresDb(BenchDb):
    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        super().__init__()
        self._url = url
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDb:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        return cls(url, pool)

    @property
    def url(self) -> str:
        return self._url

    async def _insert(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.copy_records_to_table(table, records=rows, columns=list(columns))

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        query = sql.format(*(f"${n + 1}" for n in range(len(args))))
        async with self._pool.acquire() as conn:
            return [tuple(row) for row in await conn.fetch(query, *args)]

    async def _execute(self, sql: str, *args: Any) -> None:
        query = sql.format(*(f"${n + 1}" for n in range(len(args))))
        async with self._pool.acquire() as conn:
            await conn.execute(query, *args)

    async def _after_bulk_write(self) -> None:
        """Vacuum and analyze, as autovacuum would have by now.

        A production server runs autovacuum; the one a bench meets may not
        (this machine's has ``autovacuum = off``). Without statistics the
        planner guesses: under pay load it scanned all of ``users`` for each
        batch of SMS recipients, and dead bill versions from earlier
        measurements piled up in every index. Both voltpay and its ceiling
        run on the result, so neither is measured on a neglected database.
        """
        async with self._pool.acquire() as conn:
            await conn.execute("VACUUM (ANALYZE)")

    async def close(self) -> None:
        await self._pool.close()


class SqliteDb(BenchDb):
    """SQLite through the standard library: the bench writes only while the
    processes under test are idle, and reads under WAL while they run."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA journal_mode = WAL")

    @property
    def url(self) -> str:
        return f"sqlite://{self._path}"

    @staticmethod
    def _value(value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, datetime):
            return _ts(value)
        return value

    async def _insert(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        converted = [tuple(self._value(v) for v in row) for row in rows]

        def write() -> None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    f'INSERT INTO "{table}" ({names}) VALUES ({marks})', converted
                )

        await asyncio.to_thread(write)

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        query = sql.format(*("?" for _ in args))
        values = [self._value(v) for v in args]
        return await asyncio.to_thread(lambda: self._conn.execute(query, values).fetchall())

    async def _execute(self, sql: str, *args: Any) -> None:
        query = sql.format(*("?" for _ in args))
        values = [self._value(v) for v in args]
        await asyncio.to_thread(lambda: self._conn.execute(query, values))

    async def _after_bulk_write(self) -> None:
        """Nothing: SQLite has no background upkeep that the bench stands in for."""

    async def close(self) -> None:
        self._conn.close()


async def create_postgres_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


async def drop_postgres_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
