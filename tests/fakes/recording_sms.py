"""An SMS sender for tests: remembers every message it was asked to send.

sms = RecordingSmsSender(delay_seconds=0.2)   # hold each send a moment
CompositionRoot(settings, sms_sender=sms)
...
sms.sent_for(event_id)                        # the messages for one event
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime

from voltpay.bridges.sms import SmsMessage, SmsReceipt


class RecordingSmsSender:
    name = "recording"

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.sent: list[SmsMessage] = []
        self.closed = False

    async def send(self, message: SmsMessage) -> SmsReceipt:
        # Recorded on entry: a send that overlaps another for the same event
        # is visible as soon as it starts.
        self.sent.append(message)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        return SmsReceipt(provider_message_id=f"rec-{len(self.sent)}", sender=self.name)

    async def find(self, message: SmsMessage, since: datetime) -> SmsReceipt | None:
        """Sends are recorded as they begin, not as they are accepted, so
        this sender cannot tell: every earlier attempt is sent again."""
        return None

    async def close(self) -> None:
        self.closed = True

    def sent_for(self, event_id: str) -> list[SmsMessage]:
        return [message for message in self.sent if message.idempotency_key == event_id]

    def per_event(self) -> Counter[str]:
        """How many SMS were sent for each event id."""
        return Counter(message.idempotency_key for message in self.sent)
