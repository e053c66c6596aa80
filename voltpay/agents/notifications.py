"""The notifications agent: one SMS per event, however often it arrives.

Order of work, chosen so that a crash can at worst resend once and never
lose an SMS: record the event id in the inbox, create the notification row
(unique per event id), take a short lease on it, send, mark it sent, and
only then let the poller delete the SQS message. A crash after the send but
before "sent" is recorded leaves the row queued with an expiring lease; the
redelivered message finds it and sends again (the one possible duplicate).
A duplicate delivery while the first is still sending finds the lease held
and is deferred, not sent.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from typing import Any

from voltpay.agents.mailbox import Mailbox
from voltpay.bridges.sms import SmsError, SmsMessage, SmsSender
from voltpay.domain.events import Event
from voltpay.domain.sms import UnknownEvent, render_sms
from voltpay.models import notifications as store
from voltpay.observability.logging import log_context
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.agents.notifications")


class Disposition(enum.Enum):
    DONE = "done"  # handled: delete the message
    DUPLICATE = "duplicate"  # handled before: delete the message
    RETRY = "retry"  # not handled: leave it to be redelivered
    DEFER = "defer"  # someone else is on it: look again shortly


class NotificationsAgent:
    name = "notifications"

    def __init__(
        self,
        app: Any,
        *,
        sender: SmsSender,
        metrics: Metrics,
        capacity: int,
        concurrency: int,
        currency: str,
        lease_seconds: float,
    ) -> None:
        self._sender = sender
        self._metrics = metrics
        self._currency = currency
        self._lease = lease_seconds
        self.mailbox: Mailbox[Event, Disposition] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    async def handle(self, event: Event) -> Disposition:
        with log_context(event_id=str(event.event_id)):
            return await self._handle(event)

    async def _handle(self, event: Event) -> Disposition:
        await store.record_inbox(event.event_id, event.type)
        user_id = _uuid(event.data.get("userId"))
        phone = await store.phone_of(user_id) if user_id else None
        try:
            body = render_sms(event.type, event.data, self._currency)
        except UnknownEvent as exc:
            log.warning("no SMS for event %s: %s", event.event_id, exc)
            return Disposition.DONE
        created = await store.create_claimed(
            event.event_id, event.type, user_id, phone or "", body, self._lease
        )
        if created is not None:
            if not phone:
                await store.mark_failed(created, self._sender.name, "no phone number")
                return Disposition.DONE
            return await self._send(created, phone, body, event)
        notification = await store.ensure_notification(
            event.event_id, event.type, user_id, phone or "", body
        )
        if notification.status != store.QUEUED:
            self._metrics.sqs_duplicates_skipped.inc()
            return Disposition.DUPLICATE
        if not phone:
            await store.mark_failed(notification.id, self._sender.name, "no phone number")
            return Disposition.DONE
        if not await store.claim(notification.id, self._lease):
            return Disposition.DEFER
        return await self._send(notification.id, phone, body, event)

    async def _send(
        self, notification_id: uuid.UUID, phone: str, body: str, event: Event
    ) -> Disposition:
        sender = self._sender.name
        try:
            # Bounded by the lease, so no other consumer can claim the row
            # (and send again) while this send is still under way.
            receipt = await asyncio.wait_for(
                self._sender.send(SmsMessage(phone, body, str(event.event_id))),
                self._lease * 0.9,
            )
        except TimeoutError:
            self._metrics.sms_failed.labels(sender=sender).inc()
            await store.release(notification_id, "the SMS send timed out")
            return Disposition.RETRY
        except SmsError as exc:
            self._metrics.sms_failed.labels(sender=sender).inc()
            if exc.permanent:
                log.warning("SMS for event %s refused for good: %s", event.event_id, exc)
                await store.mark_failed(notification_id, sender, str(exc))
                return Disposition.DONE
            log.warning("SMS for event %s failed for now: %s", event.event_id, exc)
            await store.release(notification_id, str(exc))
            return Disposition.RETRY
        await store.mark_sent(notification_id, receipt.sender, receipt.provider_message_id)
        self._metrics.sms_sent.labels(sender=receipt.sender).inc()
        return Disposition.DONE


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
