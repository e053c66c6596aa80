"""The parts the composition root opens in turn, each an async context
manager that yields it whole, and the housekeeper.

A part's close follows its ``yield`` with no ``finally``: the composition
root leaves a part only by an ordinary exit, and a stop whose grace is over
leaves the parts still open as they are rather than wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from voltpay.config.settings import DatabaseSettings
from voltpay.http.context import Readiness
from voltpay.models import idempotency, leases, phones
from voltpay.models import outbox as outbox_store
from voltpay.models import users as user_store
from voltpay.models.database import close_database, open_database
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.daemon")
HOUSEKEEPING_SECONDS = 600.0
HOUSEKEEPING = "housekeeping"
HOUSEKEEPING_LEASE_SECONDS = 300.0


class Closeable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)


@asynccontextmanager
async def closing(resource: C) -> AsyncIterator[C]:
    """``resource``, closed after the yield."""
    yield resource
    await resource.close()


@asynccontextmanager
async def database(settings: DatabaseSettings, readiness: Readiness) -> AsyncIterator[None]:
    """The database, migrated and open."""
    await open_database(settings.url, pool_max_size=settings.pool_max_size)
    readiness.checks["database"] = _database_check
    yield
    await close_database()


async def _database_check() -> None:
    from tortoise import connections

    await connections.get("default").execute_query("SELECT 1")


@asynccontextmanager
async def registered_run(instance_id: uuid.UUID) -> AsyncIterator[None]:
    """This daemon run, registered and heard from while it lasts; marked
    stopped after the yield, so that every lease it still holds is free for
    the others at once."""
    reaped = await leases.register(instance_id)
    if reaped:
        log.info("%d earlier run(s) on this machine ended without stopping", reaped)
    heartbeat = asyncio.create_task(_beat(instance_id), name="heartbeat")
    yield
    heartbeat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat
    await leases.stopped(instance_id)


async def _beat(instance_id: uuid.UUID) -> None:
    """Keep this run's leases good: a run not heard from for
    ``leases.LIVENESS_SECONDS`` is presumed dead and its leases void."""
    while True:
        await asyncio.sleep(leases.HEARTBEAT_SECONDS)
        try:
            await leases.heartbeat(instance_id)
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)


@asynccontextmanager
async def started_agents(app: Any, metrics: Metrics, readiness: Readiness) -> AsyncIterator[None]:
    """The faust app with every agent defined on it, started; stopped after
    the yield (which cancels whatever an agent still holds: drain first)."""
    await app.start()
    for stats in metrics.agents():
        stats.started()

    async def agents_check() -> None:
        stopped = [s.name for s in metrics.agents() if s.state != "running"]
        if stopped:
            raise RuntimeError("agents not running: " + ", ".join(stopped))

    readiness.checks["agents"] = agents_check
    yield
    await app.stop()
    for stats in metrics.agents():
        stats.stopped()


class Housekeeper:
    """Every ten minutes, forgets expired sessions, failed logins and
    idempotency keys, and delivered events past their retention; one daemon
    at a time keeps house, the others skip the pass."""

    def __init__(self, instance_id: uuid.UUID, *, retention_days: int) -> None:
        self._instance_id = instance_id
        self._retention_days = retention_days
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_house(), name="housekeeping")

    def stop(self) -> None:
        """No new pass begins."""
        self._stopping.set()

    async def finished(self) -> None:
        """The pass under way, if any, is over."""
        self.stop()
        if self._task is not None:
            await self._task

    async def _keep_house(self) -> None:
        retention = timedelta(days=self._retention_days)
        lease = leases.Lease(self._instance_id, HOUSEKEEPING_LEASE_SECONDS)
        while not self._stopping.is_set():
            try:
                if await leases.take(HOUSEKEEPING, lease):
                    try:
                        await self._keep_house_once(retention)
                    finally:
                        await leases.give_back(HOUSEKEEPING, self._instance_id)
            except Exception:
                log.exception("housekeeping failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HOUSEKEEPING_SECONDS)

    async def _keep_house_once(self, retention: timedelta) -> None:
        await user_store.purge_expired()
        await phones.purge_expired()
        await idempotency.purge_expired()
        await leases.purge()
        outbox, inbox = await outbox_store.purge_delivered(datetime.now(UTC) - retention)
        if outbox or inbox:
            log.info(
                "deleted %d published outbox rows and %d inbox rows older than %d days",
                outbox,
                inbox,
                self._retention_days,
            )
