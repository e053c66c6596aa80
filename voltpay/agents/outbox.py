"""The outbox relay: publishes committed events to SNS, at least once, each
signed (``voltpay.domain.event_signing``) as it leaves the outbox.

Woken right after a commit that wrote outbox rows, and by a timer as a safety
net. Rows are published in PublishBatch calls of up to 10; each entry's result
is checked (a batch can half-fail) and failures are retried with exponential
backoff and jitter. With SNS down, rows wait; nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from voltpay.agents.pacing import Pacer
from voltpay.bridges.sns import OutgoingEvent, PublishFailed, PublishOutcome, SnsPublisher
from voltpay.domain.event_signing import Keyring
from voltpay.models import outbox as outbox_store
from voltpay.models.leases import Lease
from voltpay.models.tables import OutboxEvent
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.agents.outbox")
WAKE_LINGER_SECONDS = 0.02
BACKLOG_SAMPLE_SECONDS = 1.0


def backoff_seconds(attempts: int, maximum: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform between 0 and min(maximum, 0.5 * 2**attempts)."""
    ceiling = min(maximum, 0.5 * (2 ** min(attempts, 16)))
    return (rng or random).uniform(ceiling / 2, ceiling)


class OutboxRelay:
    name = "outbox-relay"

    def __init__(
        self,
        publisher: SnsPublisher,
        *,
        keyring: Keyring,
        lease: Lease,
        metrics: Metrics,
        interval_seconds: float,
        batch_size: int = 10,
        max_backoff_seconds: float = 60.0,
        parallel_batches: int = 4,
        pacer: Pacer | None = None,
    ) -> None:
        self._publisher = publisher
        # Signs every event published, so that consumers act only on ours.
        self._keyring = keyring
        # Rows being published are leased to this daemon.
        self._lease = lease
        self._metrics = metrics
        self._interval = interval_seconds
        self._batch_size = batch_size
        self._max_backoff = max_backoff_seconds
        self._parallel = parallel_batches
        # Paces the relay's own passes (not the final flush) while events arrive.
        self._pacer = pacer
        self._resume: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._woken = 0
        self._batch_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sampled_at = float("-inf")
        # How long the oldest row of the last claim had waited since its
        # commit: how late the relay is running.
        self.lag_seconds = 0.0
        self.stats = metrics.agent(self.name, capacity=batch_size * parallel_batches)

    def wake(self) -> None:
        """A commit wrote outbox rows (one call per commit)."""
        self._woken += 1
        self._wakeup.set()
        if self._woken >= self._batch_size:
            self._batch_ready.set()

    def wake_now(self) -> None:
        """Publish without waiting for a fuller batch (the pace allows one again)."""
        self._woken = max(self._woken, self._batch_size)
        self._wakeup.set()
        self._batch_ready.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self.name)
            self.stats.started()

    async def stop(self) -> None:
        """Let the pass under way finish, then stop.

        Never cancelled mid-pass: a cancelled database call can leave
        claimed rows (or, on SQLite, the connection's lock) behind.
        """
        self._stopping = True
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        task, self._task = self._task, None
        if task is not None:
            self._wakeup.set()
            await task
        self._metrics.outbox_yielding.set(0)
        self.stats.stopped()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval)
            self._wakeup.clear()
            if self._stopping:
                break
            if self._woken < self._batch_size:
                # Wait a moment for a full batch: each PublishBatch costs
                # about the same CPU whether it carries one event or ten.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), WAKE_LINGER_SECONDS)
            self._woken = 0
            self._batch_ready.clear()
            try:
                await self.flush(paced=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("outbox relay pass failed")
                self.stats.crashed(exc)
                self.stats.started()

    async def flush(self, *, paced: bool = False) -> int:
        """Publish what is due now; return how many rows went out.

        Unpaced (the final flush at shutdown), everything due; paced, only as
        many as the pacer allows, the rest on a later pass.
        """
        published = 0
        pacer = self._pacer if paced else None
        while True:
            limit = self._batch_size * self._parallel
            if pacer is not None:
                allowed = pacer.allowance(limit)
                self._metrics.outbox_yielding.set(1 if pacer.yielding else 0)
                if allowed < limit:
                    # Whole batches only: each PublishBatch costs about the
                    # same CPU whether it carries one event or ten.
                    limit = allowed - allowed % self._batch_size
                    if limit <= 0:
                        self._resume_in(pacer.delay(self._batch_size))
                        break
            rows = await outbox_store.claim_due(limit, self._lease)
            if pacer is not None:
                pacer.spend(len(rows))
            if not rows:
                self.lag_seconds = 0.0
                break
            oldest = min(row.created_at for row in rows)
            self.lag_seconds = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
            batches = [
                rows[i : i + self._batch_size] for i in range(0, len(rows), self._batch_size)
            ]
            results = await asyncio.gather(*(self._publish(batch) for batch in batches))
            sent = sum(results)
            published += sent
            if sent == 0 or len(rows) < limit:
                # Drained: rows committed since then have woken us again.
                break
        await self._sample_backlog()
        return published

    def _resume_in(self, seconds: float) -> None:
        """Pass again once the pace allows a batch."""
        if self._resume is None and not self._stopping:
            self._resume = asyncio.get_running_loop().call_later(seconds, self._resumed)

    def _resumed(self) -> None:
        self._resume = None
        self.wake_now()

    async def _publish(self, rows: Sequence[OutboxEvent]) -> int:
        self.stats.began()
        started = time.perf_counter()
        sign = self._keyring.sign
        events = [
            OutgoingEvent(str(r.event_id), r.event_type, r.body, sign(r.body.encode()))
            for r in rows
        ]
        try:
            outcomes = await self._publisher.publish_batch(events)
        except Exception as exc:
            log.exception("publishing a batch failed unexpectedly")
            error = f"{type(exc).__name__}: {exc}"
            outcomes = [PublishOutcome(e.event_id, False, None, error, True) for e in events]
        return await self._record(rows, outcomes, started)

    async def _record(
        self, rows: Sequence[OutboxEvent], outcomes: Sequence[PublishOutcome], started: float
    ) -> int:
        by_event = {outcome.event_id: outcome for outcome in outcomes}
        done = [row.id for row in rows if by_event.get(str(row.event_id), _LOST).ok]
        await outbox_store.mark_published(done, datetime.now(UTC))
        failures = [row for row in rows if not by_event.get(str(row.event_id), _LOST).ok]
        for row in failures:
            error = by_event.get(str(row.event_id), _LOST).error or "no result"
            await outbox_store.mark_failed(
                row.id, error, backoff_seconds(row.attempts + 1, self._max_backoff)
            )
        self._metrics.outbox_published.inc(len(done))
        elapsed = time.perf_counter() - started
        if failures:
            self._metrics.outbox_publish_failures.inc(len(failures))
            first = by_event.get(str(failures[0].event_id), _LOST).error or "no result"
            log.warning("%d of %d events not published: %s", len(failures), len(rows), first)
            self.stats.failed(elapsed, PublishFailed(first))
        else:
            self.stats.succeeded(elapsed)
        return len(done)

    async def _sample_backlog(self) -> None:
        # Counting the backlog scans it: once a second is enough for a gauge.
        now = time.monotonic()
        if now - self._sampled_at < BACKLOG_SAMPLE_SECONDS:
            return
        self._sampled_at = now
        waiting, oldest = await outbox_store.backlog()
        self._metrics.outbox_waiting.set(waiting)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        self._metrics.outbox_oldest_age.set(max(0.0, age))


_LOST = PublishOutcome(event_id="", ok=False, message_id=None, error="no result", retryable=True)
