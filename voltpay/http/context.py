"""What the HTTP layer is handed by the composition root."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from voltpay.agents.bills import BillAnswer, BillCommand
from voltpay.agents.fundings import FundingAnswer, FundingCommand
from voltpay.agents.mailbox import Mailbox
from voltpay.agents.wallets import AddFunds, FundsAdded
from voltpay.bridges.sms import SmsSender
from voltpay.config import Settings
from voltpay.http import clients
from voltpay.http.auth import Hashing
from voltpay.models import idempotency
from voltpay.models.tables import User
from voltpay.observability.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[None]]


@dataclass
class Readiness:
    """Named checks behind /readyz, and the drain flag that fails it first.

    A verdict is kept for ``cache_seconds`` and one look runs at a time,
    however many ask: a flood of /readyz costs one database query and two
    AWS calls a second or so, and its answers agree with each other."""

    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    draining: bool = False
    timeout_seconds: float = 2.0
    cache_seconds: float = 1.0
    _verdict: tuple[float, list[str]] | None = field(default=None, repr=False)
    _looking: asyncio.Future[list[str]] | None = field(default=None, repr=False)

    async def failing(self) -> list[str]:
        loop = asyncio.get_running_loop()
        if self._verdict is not None and loop.time() - self._verdict[0] < self.cache_seconds:
            return self._verdict[1]
        if self._looking is None:
            self._looking = asyncio.ensure_future(self._look())
        # Shielded: one caller going away does not cancel the others' look.
        return list(await asyncio.shield(self._looking))

    async def _look(self) -> list[str]:
        async def run(name: str, check: ReadinessCheck) -> str | None:
            try:
                await asyncio.wait_for(check(), self.timeout_seconds)
            except Exception:
                return name
            return None

        try:
            results = await asyncio.gather(*(run(n, c) for n, c in self.checks.items()))
            failing = [name for name in results if name is not None]
            self._verdict = (asyncio.get_running_loop().time(), failing)
            return failing
        finally:
            self._looking = None


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    bills: Mailbox[BillCommand, BillAnswer]
    wallets: Mailbox[AddFunds, FundsAdded]
    fundings: Mailbox[FundingCommand, FundingAnswer]
    readiness: Readiness
    wake_outbox: Callable[[], None]
    # This daemon run: the holder of the Idempotency-Key claims its requests take.
    instance_id: uuid.UUID
    hashing: Hashing
    # The one-time codes go out through it directly, never through the bus.
    sms_sender: SmsSender


SERVICES = web.AppKey("services", Services)
CURRENT_USER = web.RequestKey("user", User)
TOKEN_DIGEST = web.RequestKey("token_digest", str)
# Set while a request runs under an Idempotency-Key it claimed.
IDEMPOTENCY_CLAIM = web.RequestKey("idempotency_claim", idempotency.Key)


def client_address(request: web.Request) -> str:
    """The address of the client that sent the request: the peer's, or the
    one a trusted proxy names (``voltpay.http.clients``)."""
    return clients.client_address(request, services(request).settings.http.trusted_proxies)


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
