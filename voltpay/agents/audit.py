"""The audit agent: every event that crossed the bus, appended once.

It consumes the same SQS deliveries as the notifications agent rather than
an internal channel, so the log records what was actually published and
received, not what the daemon merely meant to publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voltpay.agents.mailbox import Mailbox
from voltpay.domain.events import Event
from voltpay.models import notifications as store
from voltpay.observability.metrics import Metrics


class AuditAgent:
    """Appends the events of one SQS receive in a single statement."""

    name = "audit"

    def __init__(self, app: Any, *, metrics: Metrics, capacity: int, concurrency: int) -> None:
        self.mailbox: Mailbox[Sequence[Event], None] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    async def handle(self, events: Sequence[Event]) -> None:
        await store.append_audit(events)
