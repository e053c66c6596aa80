"""The audit agent: every event that crossed the bus, appended once.

It consumes the same SQS deliveries as the notifications agent rather than
an internal channel, so the log records what was actually published and
received, not what the daemon merely meant to publish.
"""

from __future__ import annotations

import json
from typing import Any

from voltpay.agents.mailbox import Mailbox
from voltpay.domain.events import Event
from voltpay.models import notifications as store
from voltpay.observability.metrics import Metrics


class AuditAgent:
    name = "audit"

    def __init__(self, app: Any, *, metrics: Metrics, capacity: int, concurrency: int) -> None:
        self.mailbox: Mailbox[Event, bool] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    async def handle(self, event: Event) -> bool:
        body = json.dumps(event.envelope(), separators=(",", ":"), sort_keys=True)
        return await store.append_audit(event.event_id, event.type, event.occurred_at, body)
