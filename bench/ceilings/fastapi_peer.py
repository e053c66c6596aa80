"""The peer: voltpay's pay transaction as a new user writes it with FastAPI
and SQLAlchemy 2 async.

``python -m bench.ceilings.fastapi_peer --port N --url postgres://...`` serves
``POST /api/Vend/{billId}/pay`` on voltpay's own schema and rows, doing the
database ceiling's work (``bench.ceilings.database``) the way the two
libraries' documentation teaches it:

* ORM models declared over voltpay's existing tables, an engine from
  ``create_async_engine("postgresql+asyncpg://...")`` and one ``AsyncSession``
  per request, handed to the route by a dependency that yields it;
* the bearer token (FastAPI's ``HTTPBearer``) looked up by its SHA-256
  digest, with the user's first wallet;
* in one ``session.begin()`` transaction: the bill's pending → processing
  UPDATE, the wallet's conditional debit (``balance >= amount``, refused when
  it matches no row) and the ledger row, added as an ORM object;
* in a second one: processing → paid, with the ``payment_completed`` outbox
  row added as an ORM object (its body built as the ceiling builds it). The
  rows go to ``peer_outbox``, a copy of voltpay's ``outbox``, so that
  voltpay's relay never sees them;
* the paid bill answered through a pydantic response model, refusals through
  an exception handler with the ceiling's statuses and problem body (a
  malformed bill id gets FastAPI's own 422 where the ceiling says 404; the
  bench sends none).

It is served by uvicorn, one worker, on uvloop and httptools when installed
(as ``uvicorn[standard]`` brings them), with the access log off since the
bench runs voltpay with its request log off too. The pool has voltpay's
default size (``DEFAULT_POOL_MAX_SIZE``, no overflow), so pool size is not
what tells the two apart. PostgreSQL only: the bench compares the two there.
"""

from __future__ import annotations

import argparse
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy import BigInteger, DateTime, String, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.ceilings.database import TOKEN, UNITS, Refused, completed_event, money_text
from voltpay.models.database import DEFAULT_POOL_MAX_SIZE

OUTBOX = "peer_outbox"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), int: BigInteger}


class UserSession(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID]
    balance_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Bill(Base):
    __tablename__ = "bills"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID]
    wallet_id: Mapped[uuid.UUID | None]
    meter_number: Mapped[str] = mapped_column(String(32))
    meter_type: Mapped[str] = mapped_column(String(16))
    customer_name: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(255))
    amount_minor: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    tariff_minor_per_kwh: Mapped[int]
    token: Mapped[str | None] = mapped_column(String(20))
    units: Mapped[str | None] = mapped_column(String(32))
    receipt_number: Mapped[str | None] = mapped_column(String(64))
    vend_request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    processing_since: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    wallet_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int]
    balance_after_minor: Mapped[int]
    bill_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]


class OutboxEvent(Base):
    __tablename__ = OUTBOX

    id: Mapped[int] = mapped_column(primary_key=True)  # the table's own sequence
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(32))
    body: Mapped[str]
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]


class PaidBill(BaseModel):
    """The answer: the ceiling's keys (voltpay's bill view and the balance)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    bill_id: uuid.UUID
    meter_number: str
    meter_type: str
    customer_name: str
    address: str
    amount: str
    status: str
    token: str | None
    units: str | None
    tariff: str
    receipt_number: str | None
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    wallet_balance: str

    @classmethod
    def of(cls, bill: Bill, balance_minor: int) -> PaidBill:
        return cls(
            bill_id=bill.id,
            meter_number=bill.meter_number,
            meter_type=bill.meter_type,
            customer_name=bill.customer_name,
            address=bill.address,
            amount=money_text(bill.amount_minor),
            status=bill.status,
            token=bill.token,
            units=bill.units,
            tariff=money_text(bill.tariff_minor_per_kwh),
            receipt_number=bill.receipt_number,
            created_at=bill.created_at,
            expires_at=bill.expires_at,
            paid_at=bill.paid_at,
            wallet_balance=money_text(balance_minor),
        )


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    wallet_id: uuid.UUID


def asyncpg_url(url: str) -> str:
    """SQLAlchemy's name for the same database: ``postgresql+asyncpg://``."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def _copy_outbox(engine: AsyncEngine) -> None:
    """``peer_outbox``: voltpay's outbox table and indexes under another name."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {OUTBOX}")
        await conn.exec_driver_sql(f"CREATE TABLE {OUTBOX} (LIKE outbox INCLUDING ALL)")


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Db = Annotated[AsyncSession, Depends(get_db)]
bearer = HTTPBearer(auto_error=False)


async def current_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)], db: Db
) -> Caller:
    if credentials is None:
        raise Refused(401, "unauthorized")
    digest = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    async with db.begin():
        found = await db.execute(
            select(UserSession.user_id, Wallet.id)
            .join(Wallet, Wallet.user_id == UserSession.user_id)
            .where(UserSession.token_hash == digest, UserSession.expires_at > datetime.now(UTC))
            .order_by(Wallet.created_at)
            .limit(1)
        )
        row = found.first()
    if row is None:
        raise Refused(401, "unauthorized")
    return Caller(row[0], row[1])


async def pay(
    bill_id: uuid.UUID, caller: Annotated[Caller, Depends(current_caller)], db: Db
) -> PaidBill:
    now = datetime.now(UTC)
    async with db.begin():
        started = (
            await db.execute(
                update(Bill)
                .where(
                    Bill.id == bill_id,
                    Bill.user_id == caller.user_id,
                    Bill.status == "pending",
                    Bill.expires_at > now,
                )
                .values(
                    status="processing",
                    wallet_id=caller.wallet_id,
                    vend_request_id=uuid.uuid4().hex,
                    processing_since=now,
                    updated_at=now,
                )
                .returning(Bill.amount_minor, Bill.meter_number, Bill.customer_name)
            )
        ).first()
        if started is None:
            raise Refused(409, "bill_not_payable")
        amount = started.amount_minor
        debited = await db.execute(
            update(Wallet)
            .where(Wallet.id == caller.wallet_id, Wallet.balance_minor >= amount)
            .values(balance_minor=Wallet.balance_minor - amount, updated_at=now)
            .returning(Wallet.balance_minor)
        )
        balance = debited.scalar_one_or_none()
        if balance is None:  # no row matched: the balance does not cover the bill
            raise Refused(402, "insufficient_funds")
        db.add(
            LedgerEntry(
                id=uuid.uuid4(),
                wallet_id=caller.wallet_id,
                kind="debit",
                amount_minor=-amount,
                balance_after_minor=balance,
                bill_id=bill_id,
                created_at=now,
            )
        )
    paid_at = datetime.now(UTC)
    receipt = f"PEER-{bill_id.hex[:12]}"
    event_id, body = completed_event(
        bill_id, caller.user_id, caller.wallet_id, started, balance, receipt, paid_at
    )
    async with db.begin():
        bill = (
            await db.scalars(
                update(Bill)
                .where(Bill.id == bill_id, Bill.status == "processing")
                .values(
                    status="paid",
                    token=TOKEN,
                    units=UNITS,
                    receipt_number=receipt,
                    paid_at=paid_at,
                    updated_at=paid_at,
                )
                .returning(Bill)
            )
        ).one()
        db.add(
            OutboxEvent(
                event_id=event_id,
                event_type="payment_completed",
                body=body.decode(),
                created_at=paid_at,
                next_attempt_at=paid_at,
            )
        )
    return PaidBill.of(bill, balance)


async def refused(request: Request, refusal: Refused) -> JSONResponse:
    return JSONResponse(
        {"status": refusal.status, "code": refusal.code},
        status_code=refusal.status,
        media_type="application/problem+json",
    )


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(url: str, pool_size: int = DEFAULT_POOL_MAX_SIZE) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_async_engine(asyncpg_url(url), pool_size=pool_size, max_overflow=0)
        await _copy_outbox(engine)
        app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.add_api_route(
        "/api/Vend/{bill_id}/pay",
        pay,
        methods=["POST"],
        response_model=PaidBill,
        response_model_by_alias=True,
    )
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_exception_handler(Refused, refused)
    return app


def server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """uvicorn as a user starts it, one worker; ``ws="none"``: no route is a
    websocket, and the websocket protocol plays no part in an HTTP request."""
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, log_level="warning", ws="none"
    )
    return uvicorn.Server(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True, help="postgres://...")
    parser.add_argument(
        "--pool",
        type=int,
        default=DEFAULT_POOL_MAX_SIZE,
        help="connection pool size (voltpay's default)",
    )
    args = parser.parse_args()
    server(create_app(args.url, args.pool), args.host, args.port).run()


if __name__ == "__main__":
    main()
