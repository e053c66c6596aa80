"""The composition root: opens every part in order and sets the daemon to
work; on stop, drains the daemon, then closes the parts in reverse. serve()
runs it until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from voltpay import __version__
from voltpay.agents.app import create_faust_app
from voltpay.agents.bills import BillsAgent
from voltpay.agents.fundings import FundingsAgent
from voltpay.agents.wallets import WalletsAgent
from voltpay.bridges.electricity import ElectricityProvider, build_provider
from voltpay.bridges.paystack import PaymentGateway, PaystackGateway
from voltpay.bridges.sms import SmsSender
from voltpay.config import ConfigurationError, Settings
from voltpay.config.settings import HttpSettings, check_complete
from voltpay.daemon.parts import Housekeeper, closing, database, registered_run, started_agents
from voltpay.daemon.pipeline import Pipeline, open_pipeline
from voltpay.daemon.systemd import SystemdNotifier
from voltpay.domain.money import to_minor
from voltpay.http.app import create_app, ops_app
from voltpay.http.auth import Hashing
from voltpay.http.connections import ConnectionGuard, GuardedRunner
from voltpay.http.context import Readiness, Services
from voltpay.models import wallets as wallet_store
from voltpay.models.simulated_provider import DatabaseVendStore
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.daemon")
T = TypeVar("T")
Exit = Callable[
    [type[BaseException] | None, BaseException | None, TracebackType | None], Awaitable[bool]
]


class CompositionRoot:
    """Builds one voltpay process and takes it down again. Tests hand in
    their own collaborators."""

    def __init__(
        self,
        settings: Settings,
        *,
        provider: ElectricityProvider | None = None,
        sms_sender: SmsSender | None = None,
        metrics: Metrics | None = None,
        notifier: SystemdNotifier | None = None,
        gateway: PaymentGateway | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._readiness = Readiness()
        # This run's name in every lease it takes.
        self._instance_id = uuid.uuid4()
        self._provider = provider
        self._sms_sender = sms_sender
        self._notifier = notifier or SystemdNotifier()
        self._gateway = gateway
        self._opened = AsyncExitStack()

    async def start(self) -> Daemon:
        """Open the parts in this order, then set the daemon to work; stop()
        drains it and closes the parts in reverse, however far this got."""
        settings = self._settings
        check_complete(settings)
        if settings.funding.mode == "sandbox":
            log.warning(
                "funding mode is sandbox: add-funds credits a wallet at once with nothing "
                "paid (every such credit is marked sandbox); set VOLTPAY_FUNDING__MODE=gateway "
                "to take real payments"
            )
        await self._open("the database", database(settings.database, self._readiness))
        await _same_currency(settings.limits.currency)
        await self._open("this run", registered_run(self._instance_id))
        provider = self._provider or build_provider(settings.provider, store=DatabaseVendStore())
        await self._open("the provider", closing(provider))
        app = create_faust_app()
        pipeline = await self._open(
            "the event pipeline",
            open_pipeline(
                settings,
                app,
                self._metrics,
                self._readiness,
                instance_id=self._instance_id,
                sms_sender=self._sms_sender,
            ),
        )
        wallets = WalletsAgent(
            app,
            metrics=self._metrics,
            capacity=settings.agents.mailbox_size,
            concurrency=settings.agents.wallets_concurrency,
            on_events=pipeline.wake,
            sandbox=settings.funding.mode == "sandbox",
        )
        gateway = self._gateway
        if gateway is None and settings.funding.mode == "gateway":
            gateway = await self._open(
                "the payment gateway", closing(PaystackGateway(settings.funding))
            )
        fundings = FundingsAgent(
            app,
            settings=settings.funding,
            currency=settings.limits.currency,
            gateway=gateway,
            metrics=self._metrics,
            capacity=settings.agents.mailbox_size,
            concurrency=settings.agents.wallets_concurrency,
            on_events=pipeline.wake,
            instance_id=self._instance_id,
        )
        bills = BillsAgent(
            app,
            provider=provider,
            metrics=self._metrics,
            capacity=settings.agents.mailbox_size,
            concurrency=settings.agents.bills_concurrency,
            bill_ttl_seconds=settings.billing.bill_ttl_seconds,
            tariff_minor_per_kwh=to_minor(settings.provider.tariff_per_kwh),
            vend_timeout_seconds=settings.provider.vend_timeout_seconds,
            reconcile_interval_seconds=settings.billing.reconcile_interval_seconds,
            on_events=pipeline.wake,
            instance_id=self._instance_id,
        )
        await self._open("the agents", started_agents(app, self._metrics, self._readiness))
        hashing = await self._open(
            "password hashing",
            closing(
                Hashing(threads=settings.auth.hashing_threads, queue=settings.auth.hashing_queue)
            ),
        )
        services = Services(
            settings=settings,
            metrics=self._metrics,
            bills=bills.mailbox,
            wallets=wallets.mailbox,
            fundings=fundings.mailbox,
            readiness=self._readiness,
            wake_outbox=pipeline.wake,
            instance_id=self._instance_id,
            hashing=hashing,
            sms_sender=pipeline.sms_sender,
        )
        daemon = Daemon(
            settings=settings,
            metrics=self._metrics,
            readiness=self._readiness,
            notifier=self._notifier,
            pipeline=pipeline,
            bills=bills,
            wallets=wallets,
            fundings=fundings,
            housekeeper=Housekeeper(
                self._instance_id, retention_days=settings.outbox.retention_days
            ),
            listener=HttpListener(
                create_app(services), settings.http, self._metrics, settings.http.host
            ),
            ops_listener=(
                None
                if settings.ops.port is None
                else HttpListener(
                    ops_app(services),
                    settings.http,
                    self._metrics,
                    settings.ops.host,
                    settings.ops.port,
                )
            ),
        )
        # Drained before any part closes, whatever of it has started.
        self._opened.push_async_exit(_leaving("draining", daemon.drain))
        await daemon.start()
        return daemon

    async def stop(self) -> None:
        """Drain the daemon (``Daemon.drain`` states the steps), then close
        the parts in the reverse of their opening: the agents stop, the event
        pipeline, the provider and this run close, the database last."""
        await self._opened.aclose()
        log.info("voltpay stopped")

    async def _open(self, name: str, part: AbstractAsyncContextManager[T]) -> T:
        """Enter ``part`` now; stop() leaves it by an ordinary exit."""
        opened = await part.__aenter__()
        self._opened.push_async_exit(
            _leaving(f"closing {name}", lambda: part.__aexit__(None, None, None))
        )
        return opened


async def _same_currency(currency: str) -> None:
    """Every wallet is charged, credited and texted in the currency it was
    opened in, which is the configured one: a start with another currency on
    a database whose wallets hold money in one is a configuration error."""
    held = await wallet_store.other_currency(currency)
    if held is not None:
        raise ConfigurationError(
            f"VOLTPAY_LIMITS__CURRENCY: {currency}, but this database's wallets are in {held}"
        )


def _leaving(what: str, step: Callable[[], Awaitable[object]]) -> Exit:
    """One exit of the stop: ``step``, whose failure is logged while the next
    exit runs all the same. Once the stop is cancelled (its grace is over),
    nothing more runs: what is still open stays so as the process exits."""

    async def run(
        kind: type[BaseException] | None, _: BaseException | None, __: TracebackType | None
    ) -> bool:
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            return False
        try:
            await step()
        except Exception:
            log.exception("%s failed", what)
        return False

    return run


@dataclass(eq=False)
class Daemon:
    """One voltpay process at work: the HTTP front door, the bills and
    wallets agents with the reconciler, housekeeping and the event pipeline,
    over the parts the composition root opened. The root drains it before it
    closes any of them."""

    settings: Settings
    metrics: Metrics
    readiness: Readiness
    notifier: SystemdNotifier
    pipeline: Pipeline
    bills: BillsAgent
    wallets: WalletsAgent
    fundings: FundingsAgent
    housekeeper: Housekeeper
    listener: HttpListener
    # /metrics and /api/agents on a port of their own, when one is set.
    ops_listener: HttpListener | None
    _watchdog: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def port(self) -> int | None:
        """Where it serves; None until it does."""
        return self.listener.port

    async def start(self) -> None:
        """Set every part going, the HTTP listener last."""
        self.bills.start_reconciler()
        self.fundings.start_reconciler()
        self.housekeeper.start()
        self.pipeline.start()
        if self.ops_listener is not None:
            ops_port = await self.ops_listener.open()
            log.info("operations listener on http://%s:%s", self.settings.ops.host, ops_port)
        port = await self.listener.open()
        log.info("voltpay %s serving on http://%s:%s", __version__, self.settings.http.host, port)
        if self.settings.systemd.enabled:
            self.notifier.notify("READY=1", f"STATUS=serving on port {port}")
            if self.notifier.watchdog_interval() is not None:
                self._watchdog = asyncio.create_task(self.notifier.run_watchdog())

    async def drain(self) -> None:
        """Stop taking work and finish what is in hand, in this order: not
        ready, and systemd told; serve for the drain delay, then close the
        listener, letting the requests in flight finish; no new SQS work;
        every mailbox empty; the reconciler's and the housekeeper's passes
        finished; the outbox flushed and the event pipeline's messages
        finished. Whatever did not start has nothing to drain."""
        self.readiness.draining = True
        self.housekeeper.stop()
        if self.settings.systemd.enabled:
            self.notifier.notify("STOPPING=1", "STATUS=draining")
        await self.listener.close()
        if self.ops_listener is not None:
            await self.ops_listener.close()
        await self.pipeline.stop_intake()
        for agent in (self.bills, self.wallets, self.fundings):
            await agent.mailbox.close()
        await self.bills.stop_reconciler()
        await self.fundings.stop_reconciler()
        await self.housekeeper.finished()
        await self.pipeline.drain()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog


class HttpListener:
    """An HTTP listening socket and the app behind it, its connections
    guarded (``voltpay.http.connections``)."""

    def __init__(
        self,
        app: web.Application,
        settings: HttpSettings,
        metrics: Metrics,
        host: str,
        port: int | None = None,
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = settings.port if port is None else port
        guard = ConnectionGuard(
            header_timeout=settings.header_timeout_seconds,
            per_client=settings.max_connections_per_client,
            http=metrics.http,
        )
        self._runner = GuardedRunner(
            app,
            guard=guard,
            access_log=None,
            keepalive_timeout=settings.idle_timeout_seconds,
            # The drain delay is part of the grace: what is left of it is the
            # in-flight requests' (systemd's TimeoutStopSec counts on it).
            shutdown_timeout=settings.shutdown_grace_seconds - settings.drain_delay_seconds,
        )
        self.port: int | None = None

    async def open(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = _bound_port(self._runner)
        return self.port

    async def close(self) -> None:
        """Serve on for the drain delay, if it served (the load balancer
        notices /readyz fail meanwhile); then take no more connections and
        let the requests in flight finish."""
        delay = self._settings.drain_delay_seconds
        if delay > 0 and self.port is not None:
            log.info("not ready; serving %g s more before closing the listener", delay)
            await asyncio.sleep(delay)
        await self._runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the HTTP listener has no address")


# Net new objects before the collector looks at the youngest ones (CPython's
# default is 700, which the objects of the requests in flight alone outnumber).
# At 7,000, requests finish and free their objects before a young pass walks
# them, so live requests are not promoted into the older generations, whose
# passes hold the event loop far longer (bench/results/rationale.md).
YOUNG_GENERATION_THRESHOLD = 7000


def settle_heap() -> None:
    """Collect start-up garbage, then move every object alive now out of the
    collector's reach, and let the young generation hold the requests in flight.

    What start-up builds (modules, AWS service models, the ORM's and the
    actors' objects) lives as long as the process, yet each full collection
    would walk all of it, holding the event loop and every in-flight request
    with it. Frozen, they are never walked again; full passes walk only what
    came later.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


async def serve(settings: Settings, **collaborators: Any) -> int:
    """Run until SIGTERM or SIGINT, then drain; a second signal exits at once."""
    root = CompositionRoot(settings, **collaborators)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    this_task = asyncio.current_task()
    starting = True

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: draining", signal.Signals(signum).name)
        stop.set()
        if starting and this_task is not None:
            # Start-up (migrations, a database slow to answer) stops where it
            # is, rather than once it is over. It runs in this task, not one
            # of its own: Tortoise keeps its connections in this task's context.
            this_task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await root.start()
        except asyncio.CancelledError:
            if not (stop.is_set() and this_task is not None):
                raise
            this_task.uncancel()  # the signal's doing: drain what did start
        else:
            starting = False
            settle_heap()
            await stop.wait()
    finally:
        try:
            await asyncio.wait_for(root.stop(), settings.http.shutdown_grace_seconds + 5)
        except TimeoutError:
            log.error("shutdown took longer than the grace period; exiting")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0
