"""The agents tier: the bills and wallets agents built alone and asked through
their mailboxes, each test over a fresh SQLite file, with the simulated
provider (its in-memory store) and the in-process faust app. No daemon, no
HTTP, no SNS/SQS and no network, so a change to a rule is checked in seconds.
The SQL's agreement with the rules, on both databases, is the integration
tier's (``test_money_rules.py``)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_user, sqlite_copy
from voltpay.agents.app import create_faust_app
from voltpay.agents.bills import BillAnswer, BillsAgent, CreateBill, PayBill
from voltpay.agents.wallets import AddFunds, FundsAdded, WalletsAgent
from voltpay.bridges.electricity import SimulatedProvider
from voltpay.daemon.parts import started_agents
from voltpay.http.context import Readiness
from voltpay.models import wallets
from voltpay.models.tables import Bill, OutboxEvent
from voltpay.observability.metrics import Metrics

METER = "A123456"
VEND_TIMEOUT_SECONDS = 1.0


def bills_agent(
    app: Any,
    provider: SimulatedProvider,
    instance_id: uuid.UUID,
    *,
    metrics: Metrics | None = None,
    bill_ttl_seconds: int = 600,
) -> BillsAgent:
    """A bills agent as the daemon builds one, whose reconciler runs only when
    a test calls ``reconcile_once``."""
    return BillsAgent(
        app,
        provider=provider,
        metrics=metrics or Metrics(process_metrics=False),
        capacity=10,
        concurrency=1,
        bill_ttl_seconds=bill_ttl_seconds,
        tariff_minor_per_kwh=6800,
        vend_timeout_seconds=VEND_TIMEOUT_SECONDS,
        reconcile_interval_seconds=60,
        on_events=lambda: None,
        instance_id=instance_id,
    )


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in this tier connects anywhere: a connection fails the test."""

    def refuse(_: socket.socket, address: object) -> None:
        raise AssertionError(f"the agents tier connected to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite alone (the ``database`` fixture opens it)."""
    return sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
def bill_ttl_seconds() -> int:
    """How long a verified bill stays payable; parametrize a test to change it."""
    return 600


@dataclass(frozen=True)
class Payer:
    user_id: uuid.UUID
    wallet_id: uuid.UUID


@dataclass(frozen=True)
class Agents:
    """The two agents, asked as the HTTP handlers ask them."""

    bills: BillsAgent
    wallets: WalletsAgent

    async def payer(self, funds_minor: int = 0) -> Payer:
        payer = Payer(*await new_user())
        if funds_minor:
            await self.add_funds(payer, funds_minor)
        return payer

    async def add_funds(self, payer: Payer, amount_minor: int) -> FundsAdded:
        return await self.wallets.mailbox.ask(
            AddFunds(payer.user_id, payer.wallet_id, amount_minor)
        )

    async def verify(self, payer: Payer, amount_minor: int = 100_00, meter: str = METER) -> Bill:
        answer = await self.bills.mailbox.ask(CreateBill(payer.user_id, meter, amount_minor))
        return answer.bill

    async def pay(self, payer: Payer, bill_id: uuid.UUID) -> BillAnswer:
        return await self.bills.mailbox.ask(PayBill(payer.user_id, bill_id, payer.wallet_id))

    async def reconcile(self) -> int:
        """One reconciler pass, once every vend under way is overdue."""
        return await self.bills.reconcile_once(
            datetime.now(UTC) + timedelta(seconds=VEND_TIMEOUT_SECONDS + 1)
        )


async def balance(payer: Payer) -> int:
    return await wallets.balance_of(payer.wallet_id)


async def events() -> list[str]:
    """The types of the events written to the outbox, oldest first."""
    return list(await OutboxEvent.all().order_by("id").values_list("event_type", flat=True))


@pytest.fixture
async def agents(
    instance: uuid.UUID, provider: SimulatedProvider, bill_ttl_seconds: int
) -> AsyncIterator[Agents]:
    """Both agents on one faust app, started as the daemon starts them."""
    app = create_faust_app()
    metrics = Metrics(process_metrics=False)
    built = Agents(
        bills=bills_agent(
            app, provider, instance, metrics=metrics, bill_ttl_seconds=bill_ttl_seconds
        ),
        wallets=WalletsAgent(
            app, metrics=metrics, capacity=10, concurrency=1, on_events=lambda: None, sandbox=True
        ),
    )
    async with started_agents(app, metrics, Readiness()):
        yield built
