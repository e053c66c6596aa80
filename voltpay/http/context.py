"""What the HTTP layer is handed by the composition root."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from voltpay.agents.bills import BillAnswer, BillCommand
from voltpay.agents.mailbox import Mailbox
from voltpay.agents.wallets import AddFunds, FundsAdded
from voltpay.bridges.sms import SmsSender
from voltpay.config import Settings
from voltpay.models import idempotency
from voltpay.models.tables import User
from voltpay.observability.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass
class Readiness:
    """Named checks behind /readyz, and the drain flag that fails it first."""

    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    draining: bool = False
    timeout_seconds: float = 2.0

    async def failing(self) -> list[str]:
        async def run(name: str, check: ReadinessCheck) -> str | None:
            try:
                await asyncio.wait_for(check(), self.timeout_seconds)
            except Exception:
                return name
            return None

        results = await asyncio.gather(*(run(n, c) for n, c in self.checks.items()))
        return [name for name in results if name is not None]


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    bills: Mailbox[BillCommand, BillAnswer]
    wallets: Mailbox[AddFunds, FundsAdded]
    readiness: Readiness
    wake_outbox: Callable[[], None]
    # This daemon run: the holder of the Idempotency-Key claims its requests take.
    instance_id: uuid.UUID
    # The one-time codes go out through it directly, never through the bus.
    sms_sender: SmsSender


SERVICES = web.AppKey("services", Services)
CURRENT_USER = web.RequestKey("user", User)
TOKEN_DIGEST = web.RequestKey("token_digest", str)
# Set while a request runs under an Idempotency-Key it claimed.
IDEMPOTENCY_CLAIM = web.RequestKey("idempotency_claim", idempotency.Key)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def current_user(request: web.Request) -> User:
    user: User = request[CURRENT_USER]
    return user


def parse_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
