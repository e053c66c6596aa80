"""The event pipeline: the embedded SNS/SQS endpoint (when no endpoint is
configured), the AWS clients and resources, the SMS sender, and the agents
that relay the outbox, poll SQS, notify and audit.

``open_pipeline`` opens the bridges and yields the ``Pipeline`` whole; its
relay and poller run from ``Pipeline.start()`` until ``Pipeline.drain()``."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from voltpay.agents.audit import AuditAgent
from voltpay.agents.notifications import NotificationsAgent
from voltpay.agents.outbox import OutboxRelay
from voltpay.agents.pacing import Arrivals, Load, Pacer
from voltpay.agents.poller import SqsPoller
from voltpay.bridges.aws import AwsClients
from voltpay.bridges.embedded import BusAccess, EmbeddedBus
from voltpay.bridges.provisioning import Provisioned, provision
from voltpay.bridges.sms import AllowedDestinations, LogSmsSender, SmsSender, build_sms_sender
from voltpay.bridges.sns import SnsPublisher
from voltpay.bridges.sqs import MAX_BATCH, SqsConsumer
from voltpay.config import Settings
from voltpay.config.settings import REPUBLISH_WINDOW_DAYS, EventSettings
from voltpay.domain.event_signing import Keyring, SigningKey
from voltpay.http.context import Readiness
from voltpay.models import outbox as outbox_store
from voltpay.models import signing_keys
from voltpay.models.leases import Lease
from voltpay.observability.logging import register_secret
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.daemon.pipeline")
NOTIFY_LEASE_SECONDS = 60
OUTBOX_LEASE_SECONDS = 60.0


class Pipeline:
    """The outbox relay, the SQS poller and the notifications and audit
    agents, wired to the bridges they are given."""

    def __init__(
        self,
        settings: Settings,
        app: Any,
        metrics: Metrics,
        readiness: Readiness,
        *,
        instance_id: uuid.UUID,
        clients: AwsClients,
        resources: Provisioned,
        sms_sender: SmsSender,
        keyring: Keyring,
    ) -> None:
        self._settings = settings
        self._readiness = readiness
        self.resources = resources
        # Also the one-time codes', which the front sends itself.
        self.sms_sender = sms_sender
        self.keyring = keyring
        # The embedded bus dies with the daemon: it is consumed to the end
        # at shutdown.
        self._embedded = settings.aws.uses_embedded_endpoint
        # The commits are counted once; the relay and the poller each may
        # take the paced rate of them.
        self._arrivals = Arrivals()

        agents = settings.agents
        self._load: Load | None = None
        if agents.yield_in_flight > 0 and agents.yield_max_delay_seconds > 0:
            self._load = Load(lambda: metrics.http.in_flight, requests=agents.yield_in_flight)

        def pacer(yield_to: Callable[[], bool] | None = None) -> Pacer:
            return Pacer(
                factor=agents.drain_pace_factor,
                floor_per_second=agents.drain_pace_floor,
                arrivals=self._arrivals,
                yield_to=yield_to,
            )

        # Only the relay yields: the poller then has only the floor's events
        # to take, and a backlog already on the queue drains at its pace.
        relay_pacer = pacer(self._relay_yields if self._load is not None else None)
        poller_pacer = pacer()

        publisher = SnsPublisher(clients.sns_direct, resources.topic_arn)
        self._consumer = SqsConsumer(
            clients.sqs_direct,
            resources.queue_url,
            dead_letter_queue_url=resources.dead_letter_queue_url,
        )
        readiness.checks["sns"] = publisher.check
        readiness.checks["sqs"] = self._consumer.check
        self.relay = OutboxRelay(
            publisher,
            keyring=keyring,
            lease=Lease(instance_id, OUTBOX_LEASE_SECONDS),
            metrics=metrics,
            interval_seconds=settings.outbox.relay_interval_seconds,
            batch_size=settings.outbox.batch_size,
            max_backoff_seconds=settings.outbox.max_backoff_seconds,
            pacer=relay_pacer,
        )

        in_flight = agents.notifications_in_flight
        # The agents take one receive (1 to 10 messages) per command.
        batches = max(1, -(-in_flight // MAX_BATCH))
        self.notifications = NotificationsAgent(
            app,
            sender=sms_sender,
            metrics=metrics,
            capacity=in_flight,
            concurrency=batches,
            currency=settings.limits.currency,
            verified_only=settings.signup.verify_phone,
            # At least as long as the SMS sender's own retries can take.
            lease=Lease(
                instance_id,
                float(max(settings.aws.visibility_timeout_seconds, NOTIFY_LEASE_SECONDS)),
            ),
        )
        self.audit = AuditAgent(
            app, metrics=metrics, capacity=in_flight, concurrency=min(batches, 4)
        )
        self.poller = SqsPoller(
            self._consumer,
            self.notifications,
            self.audit,
            keyring=keyring,
            # Older events may have left the inbox, which would take a
            # replay for a first delivery.
            max_event_age=timedelta(days=settings.outbox.retention_days),
            metrics=metrics,
            max_in_flight=in_flight,
            wait_seconds=settings.aws.wait_time_seconds,
            visibility_timeout_seconds=settings.aws.visibility_timeout_seconds,
            pacer=poller_pacer,
        )

    def _relay_yields(self) -> bool:
        """Whether the relay should leave the CPU to API requests now: they
        wait for it, and the events it holds back have not waited too long."""
        assert self._load is not None
        if self._readiness.draining:
            return False  # stopping: what is held back goes before the bus closes
        if self.relay.lag_seconds >= self._settings.agents.yield_max_delay_seconds:
            return False
        return self._load.busy()

    def start(self) -> None:
        self.relay.start()
        self.relay.wake()
        self.poller.start()

    def wake(self) -> None:
        """A commit wrote events (one call per commit)."""
        self._arrivals.arrived()
        self.relay.wake()

    async def stop_intake(self) -> None:
        # An external queue keeps its messages for other daemons; the embedded
        # one dies with us, so it is consumed to the end in drain() instead.
        if not self._embedded:
            await self.poller.stop_polling()

    async def drain(self, deadline_seconds: float = 10.0) -> None:
        """Publish what the outbox still holds; with the embedded bus, consume it
        all too; then finish the messages in hand."""
        await self.relay.stop()
        try:
            await self.relay.flush()
        except Exception:
            log.exception("final outbox flush failed; the rows stay for the next start")
        if self._embedded:
            await self._consume_to_the_end(deadline_seconds)
        await self.poller.drain()
        for agent in (self.notifications, self.audit):
            await agent.mailbox.close()

    async def _consume_to_the_end(self, deadline_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        while loop.time() < deadline:
            try:
                if await self._consumer.depth() == 0 and self.poller.in_flight == 0:
                    return
            except Exception as exc:
                log.warning("reading the queue depth failed: %s", exc)
                return
            await asyncio.sleep(0.05)
        log.warning(
            "the embedded queue was not empty at shutdown; "
            "its unconsumed events go out again at the next start"
        )


async def event_keyring(settings: EventSettings) -> Keyring:
    """Signs with the operator's key when one is given, else with the key
    every daemon on this database shares (made at the first start); verifies
    with both."""
    secret = await signing_keys.shared_secret()
    register_secret(secret.hex())  # as the database holds it
    stored = SigningKey.of(secret)
    given = settings.signing_key.get_secret_value().encode()
    if not given:
        return Keyring(stored)
    return Keyring(SigningKey.of(given), [stored])


@asynccontextmanager
async def open_pipeline(
    settings: Settings,
    app: Any,
    metrics: Metrics,
    readiness: Readiness,
    *,
    instance_id: uuid.UUID,
    sms_sender: SmsSender | None = None,
) -> AsyncIterator[Pipeline]:
    """The pipeline over open bridges, its agents defined on ``app`` (the
    faust app runs them once it starts). After the yield the bridges close in
    reverse: the SMS sender (one handed in too), the AWS clients, the
    embedded endpoint. A failure while opening closes what was open by then.
    """
    aws = settings.aws
    bridges = AsyncExitStack()
    try:
        embedded: BusAccess | None = None
        if aws.uses_embedded_endpoint:
            bus = EmbeddedBus(region=aws.region, log_format=settings.log.format)
            embedded = await bus.astart()
            bridges.push_async_callback(bus.astop)
            since = datetime.now(UTC) - timedelta(days=REPUBLISH_WINDOW_DAYS)
            again = await outbox_store.republish_unconsumed(since)
            if again:
                log.info("publishing %d events again: the embedded bus lost them", again)
        clients = await AwsClients.from_settings(aws, embedded=embedded)
        bridges.push_async_callback(clients.close)
        resources = await provision(clients, aws)
        chosen = sms_sender or build_sms_sender(settings.twilio)
        if isinstance(chosen, LogSmsSender) and settings.signup.verify_phone:
            log.warning(
                "phone verification is required but no SMS provider is configured "
                "(VOLTPAY_TWILIO__*): one-time codes reach no phone, so no phone can be verified"
            )
        sender = AllowedDestinations(chosen, settings.sms.allowed_prefixes)
        bridges.push_async_callback(sender.close)
        keyring = await event_keyring(settings.events)
    except BaseException:
        await bridges.aclose()
        raise
    yield Pipeline(
        settings,
        app,
        metrics,
        readiness,
        instance_id=instance_id,
        clients=clients,
        resources=resources,
        sms_sender=sender,
        keyring=keyring,
    )
    await bridges.aclose()
