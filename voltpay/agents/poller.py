"""The SQS poller: long-polls the notifications queue and hands the events
to the notifications and audit agents, one receive's messages as one batch,
polling only while they have room (backpressure).

Before any agent sees a message, the poller takes it for an event of ours
or refuses it (``read_event``: size, our signature, the strict envelope, its
date; then the user it names must exist). A refused message is moved to the
dead-letter queue at once and counted by reason; it is never retried.

A message is deleted, in batches, only after both agents handled its event.
The agents take a receive's events together; when an agent fails on them,
it takes each event alone, so one event that breaks it holds up no other:
the others are deleted on their first receive, and only the one that fails
is left to be redelivered (and, should it keep failing, moved to the
dead-letter queue by the queue's redrive policy)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from voltpay.agents.audit import AuditAgent
from voltpay.agents.mailbox import Overloaded, Stopped
from voltpay.agents.notifications import Disposition, NotificationsAgent
from voltpay.agents.pacing import Pacer
from voltpay.bridges.sqs import MAX_BATCH, ReceivedMessage, SqsConsumer
from voltpay.domain.event_signing import SIGNATURE_ATTRIBUTE, Keyring, read_event
from voltpay.domain.events import Event, MalformedEvent
from voltpay.models.users import existing_users
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.agents.poller")
# SQS keeps a message hidden for at most 12 hours.
MAX_VISIBILITY = 43200
DLQ_SAMPLE_SECONDS = 15.0
# After a refusal the dead-letter gauges are sampled again this soon (once
# for a burst of refusals).
DLQ_RESAMPLE_SECONDS = 1.0
RECEIVE_LINGER_SECONDS = 0.03
# A paced wait gives up after this many looks (the pace itself changes).
PACE_CHECKS = 10


class SqsPoller:
    name = "sqs-poller"

    def __init__(
        self,
        consumer: SqsConsumer,
        notifications: NotificationsAgent,
        audit: AuditAgent,
        *,
        keyring: Keyring,
        max_event_age: timedelta,
        metrics: Metrics,
        max_in_flight: int,
        wait_seconds: int,
        visibility_timeout_seconds: int,
        delete_linger_seconds: float = 0.05,
        receive_linger_seconds: float = RECEIVE_LINGER_SECONDS,
        pacer: Pacer | None = None,
    ) -> None:
        self._consumer = consumer
        self._notifications = notifications
        self._audit = audit
        self._keyring = keyring
        self._max_event_age = max_event_age
        self._metrics = metrics
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._wait = wait_seconds
        self._visibility = visibility_timeout_seconds
        self._linger = delete_linger_seconds
        self._receive_linger = receive_linger_seconds
        self._pacer = pacer
        self._in_flight: dict[str, tuple[ReceivedMessage, float]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._to_delete: list[ReceivedMessage] = []
        self._delete_soon: asyncio.TimerHandle | None = None
        self._deleting: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._dead_lettered = asyncio.Event()
        self.stats = metrics.agent(self.name, capacity=max_in_flight)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._poll_forever(), name="sqs-poll"),
                asyncio.create_task(self._keep_invisible(), name="sqs-visibility"),
                asyncio.create_task(self._sample_dead_letters(), name="sqs-dlq-sample"),
            ]
            self.stats.started()

    async def stop_polling(self) -> None:
        """Stop taking messages at once (abandoning a long poll); keep handling."""
        tasks, self._tasks = self._tasks, []
        keep = [t for t in tasks if t.get_name() == "sqs-visibility"]
        for task in tasks:
            if task not in keep:
                task.cancel()
        for task in tasks:
            if task not in keep:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = keep

    async def drain(self) -> None:
        """Finish the messages in hand and delete those that were handled."""
        await self.stop_polling()
        if self._handlers:
            await asyncio.gather(*list(self._handlers), return_exceptions=True)
        await self._flush_deletes()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.stats.stopped()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _poll_forever(self) -> None:
        backoff = 0.5
        while True:
            await self._slots.acquire()
            free = 1
            while free < MAX_BATCH and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                if self._pacer is not None:
                    await self._paced(free)
                messages = await self._consumer.receive(free, self._wait, self._visibility)
                if self._pacer is not None:
                    self._pacer.spend(len(messages))
                backoff = 0.5
            except asyncio.CancelledError:
                self._release(free)
                raise
            except Exception as exc:
                self._release(free)
                log.warning("receiving from SQS failed: %s; retrying in %.1f s", exc, backoff)
                self.stats.crashed(exc)
                await asyncio.sleep(backoff)
                self.stats.started()
                backoff = min(backoff * 2, 30.0)
                continue
            self._release(free - len(messages))
            if not messages:
                continue
            self._metrics.sqs_received.inc(len(messages))
            now = time.monotonic()
            for message in messages:
                self._in_flight[message.message_id] = (message, now)
                self.stats.enqueued()
            self._idle.clear()
            task = asyncio.create_task(self._handle(messages))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            if len(messages) < MAX_BATCH:
                # A part-full batch (already being handled): let more arrive
                # before the next call, so receives (each costly) carry closer
                # to ten messages.
                await asyncio.sleep(self._receive_linger)

    async def _paced(self, count: int) -> None:
        """Wait until the pace allows ``count`` more messages."""
        assert self._pacer is not None
        for _ in range(PACE_CHECKS):
            if self._pacer.allowance(count) >= count:
                return
            await asyncio.sleep(self._pacer.delay(count))

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    async def _handle(self, messages: list[ReceivedMessage]) -> None:
        """One receive's messages: the refused ones dead-lettered, the events
        of ours handed to the agents as one batch."""
        for _ in messages:
            self.stats.dequeued()
        self.stats.began()
        started = time.perf_counter()
        try:
            done, deferred = await self._dispatch(await self._screen(messages))
            for message in done:
                self._schedule_delete(message)
            if deferred:
                # Its notification is leased: another consumer is sending it,
                # or one died holding the lease. Look again once the send is
                # surely over or the holder surely known dead, not sooner: each
                # look is a receive, and SQS dead-letters the message after
                # maxReceiveCount of them.
                hidden = min(math.ceil(self._notifications.defer_seconds), MAX_VISIBILITY)
                await self._consumer.extend_visibility(deferred, hidden)
            self.stats.succeeded(time.perf_counter() - started)
        except Exception as exc:
            ids = ", ".join(m.message_id for m in messages)
            log.exception("handling SQS messages %s failed", ids)
            self.stats.failed(time.perf_counter() - started, exc)
        finally:
            for message in messages:
                self._in_flight.pop(message.message_id, None)
            if not self._in_flight:
                self._idle.set()
            self._release(len(messages))

    async def _screen(
        self, messages: Sequence[ReceivedMessage]
    ) -> list[tuple[ReceivedMessage, Event]]:
        """The messages that carry events of ours, with their events; the
        others are moved to the dead-letter queue before this returns."""
        now = datetime.now(UTC)
        ours: list[tuple[ReceivedMessage, Event]] = []
        refused: list[tuple[ReceivedMessage, str]] = []
        for message in messages:
            signature = message.attributes.get(SIGNATURE_ATTRIBUTE)
            try:
                event = read_event(
                    message.body, signature, self._keyring, now=now, max_age=self._max_event_age
                )
            except MalformedEvent as exc:
                refused.append((message, exc.reason))
            else:
                ours.append((message, event))
        if ours:
            known = await existing_users({event.payload.user_id for _, event in ours})
            refused += [(m, "unknown_user") for m, e in ours if e.payload.user_id not in known]
            ours = [(m, e) for m, e in ours if e.payload.user_id in known]
        if refused:
            await self._refuse(refused)
        return ours

    async def _refuse(self, refused: list[tuple[ReceivedMessage, str]]) -> None:
        for message, reason in refused:
            self._metrics.events_rejected.labels(reason=reason).inc()
            # Neither the body nor the reader's words about it: the message is
            # someone else's text, kept whole in the dead-letter queue.
            log.warning(
                "refused SQS message %s (%s): moving it to the dead-letter queue",
                message.message_id,
                reason,
            )
        moved = await self._consumer.dead_letter(refused)
        if len(moved) < len(refused):
            log.warning(
                "%d refused messages stay in the queue until its redrive policy moves them",
                len(refused) - len(moved),
            )
        self._dead_lettered.set()

    async def _dispatch(
        self, ours: list[tuple[ReceivedMessage, Event]]
    ) -> tuple[list[ReceivedMessage], list[ReceivedMessage]]:
        """The messages handled (to delete) and those to look at again shortly."""
        if not ours:
            return [], []
        events = [event for _, event in ours]
        outcome, audited = await asyncio.gather(self._notify(events), self._record(events))
        handled = (Disposition.DONE, Disposition.DUPLICATE)
        done = [m for m, e in ours if e.event_id in audited and outcome.get(e.event_id) in handled]
        deferred = [m for m, e in ours if outcome.get(e.event_id) is Disposition.DEFER]
        return done, deferred

    async def _notify(self, events: Sequence[Event]) -> dict[uuid.UUID, Disposition]:
        """What the notifications agent made of each event; none for an event
        it failed on (left to be redelivered)."""
        try:
            return await self._notifications.mailbox.ask(events)
        except (Overloaded, Stopped):
            return {}
        except Exception:
            if len(events) == 1:
                return {}
        outcome: dict[uuid.UUID, Disposition] = {}
        for alone in await asyncio.gather(*(self._notify([event]) for event in events)):
            outcome.update(alone)
        return outcome

    async def _record(self, events: Sequence[Event]) -> set[uuid.UUID]:
        """The ids of the events the audit agent appended."""
        try:
            await self._audit.mailbox.ask(events)
        except (Overloaded, Stopped):
            return set()
        except Exception:
            if len(events) == 1:
                return set()
            audited: set[uuid.UUID] = set()
            for alone in await asyncio.gather(*(self._record([event]) for event in events)):
                audited |= alone
            return audited
        return {event.event_id for event in events}

    def _schedule_delete(self, message: ReceivedMessage) -> None:
        self._to_delete.append(message)
        if len(self._to_delete) >= MAX_BATCH:
            self._start_delete()
        elif self._delete_soon is None:
            loop = asyncio.get_running_loop()
            self._delete_soon = loop.call_later(self._linger, self._start_delete)

    def _start_delete(self) -> None:
        if self._delete_soon is not None:
            self._delete_soon.cancel()
            self._delete_soon = None
        batch, self._to_delete = self._to_delete[:MAX_BATCH], self._to_delete[MAX_BATCH:]
        if batch:
            task = asyncio.create_task(self._delete(batch))
            self._deleting.add(task)
            task.add_done_callback(self._deleting.discard)
        if self._to_delete:
            self._start_delete()

    async def _delete(self, batch: list[ReceivedMessage]) -> None:
        try:
            failed = await self._consumer.delete_batch(batch)
        except Exception as exc:
            log.warning("deleting %d SQS messages failed: %s", len(batch), exc)
            return
        self._metrics.sqs_deleted.inc(len(batch) - len(failed))

    async def _flush_deletes(self) -> None:
        self._start_delete()
        if self._deleting:
            await asyncio.gather(*list(self._deleting), return_exceptions=True)

    async def _keep_invisible(self) -> None:
        """Extend the visibility of messages still being handled, in batches."""
        period = max(1.0, self._visibility / 3)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            overdue = [m for m, since in self._in_flight.values() if now - since >= period]
            if not overdue:
                continue
            try:
                failed = await self._consumer.extend_visibility(overdue, self._visibility)
                self._metrics.sqs_visibility_extensions.inc(len(overdue) - len(failed))
            except Exception as exc:
                log.warning("extending visibility failed: %s", exc)

    async def _sample_dead_letters(self) -> None:
        """The dead-letter queue's depth and its oldest letter's age, every
        while and soon after a refusal."""
        while True:
            try:
                depth = await self._consumer.dead_letter_depth()
                if depth is not None:
                    self._metrics.sqs_dead_letter_messages.set(depth)
                    age = await self._consumer.dead_letter_age() if depth else 0.0
                    if age is not None:
                        self._metrics.sqs_dead_letter_oldest_age.set(age)
            except Exception as exc:
                log.debug("sampling the DLQ failed: %s", exc)
            self._dead_lettered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dead_lettered.wait(), DLQ_SAMPLE_SECONDS)
                await asyncio.sleep(DLQ_RESAMPLE_SECONDS)
