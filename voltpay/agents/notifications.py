"""The notifications agent: one SMS per event, however often it arrives.

Order of work, chosen so that a crash can at worst resend once and never
lose an SMS: record the event id in the inbox, create the notification row
(unique per event id) already holding this daemon's lease on it, send, mark
it sent, and only then let the poller delete the SQS message. A crash after
the send but before "sent" is recorded leaves the row queued with a lease
whose holder is no longer live; the redelivered message finds it, takes the
lease over and sends again (the one possible duplicate). A duplicate delivery
while a live daemon is still sending finds the lease held and is deferred,
not sent.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from voltpay.agents.mailbox import Mailbox
from voltpay.bridges.sms import SmsError, SmsMessage, SmsSender
from voltpay.domain.events import Event
from voltpay.domain.sms import UnknownEvent, fill_token, render_sms, sms_reference, token_bill
from voltpay.models import notifications as store
from voltpay.models.leases import LIVENESS_SECONDS, Lease
from voltpay.observability.logging import log_context
from voltpay.observability.metrics import Metrics

log = logging.getLogger("voltpay.agents.notifications")
# How far before a notification row was written its SMS may be dated by the
# provider (their clock and ours differ).
EARLIER_SEND_SLACK = timedelta(minutes=5)
UNVERIFIED = "the phone number is not verified"


class Disposition(enum.Enum):
    DONE = "done"  # handled: delete the message
    DUPLICATE = "duplicate"  # handled before: delete the message
    RETRY = "retry"  # not handled: leave it to be redelivered
    DEFER = "defer"  # someone else is on it: look again shortly


@dataclass(frozen=True)
class _Sent:
    notification_id: uuid.UUID
    sender: str
    provider_message_id: str


class NotificationsAgent:
    """Takes the events of one SQS receive at a time, so that the inbox and
    the notification rows (one statement on PostgreSQL) and the "sent" marks
    cost a statement per batch, not one per event; the SMS sends of a batch
    run side by side."""

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
        lease: Lease,
        verified_only: bool = False,
    ) -> None:
        self._sender = sender
        # Whether an SMS waits for its number to be verified (it is then
        # withheld, marked failed, until it is).
        self._verified_only = verified_only
        self._metrics = metrics
        self._currency = currency
        self._lease = lease
        self.mailbox: Mailbox[Sequence[Event], dict[uuid.UUID, Disposition]] = Mailbox(
            app, self.name, self.handle, capacity=capacity, concurrency=concurrency, metrics=metrics
        )

    @property
    def defer_seconds(self) -> float:
        """How long to wait before looking again at an event whose notification
        another instance holds: it is sent by then, or its holder, if it died,
        is known to be dead (so the lease is void), or the lease has run out."""
        return min(self._lease.seconds, 2 * LIVENESS_SECONDS) + 1

    async def handle(self, events: Sequence[Event]) -> dict[uuid.UUID, Disposition]:
        """What became of each event, by event id."""
        unique: dict[uuid.UUID, Event] = {}
        for event in events:  # one receive may carry the same event twice
            unique.setdefault(event.event_id, event)
        if len(unique) < len(events):
            # The extra copies share their original's outcome: never a second SMS.
            self._metrics.sqs_duplicates_skipped.inc(len(events) - len(unique))
        received = [self._received(event) for event in unique.values()]
        created = await store.receive(received, self._lease)
        outcome = {r.event_id: Disposition.DONE for r in received if r.body is None}
        texted = [r for r in received if r.body is not None]
        tokens = await store.tokens_of({r.token_bill_id for r in texted if r.token_bill_id})
        withheld = (
            await store.unverified_of({r.user_id for r in texted if r.user_id is not None})
            if self._verified_only
            else set()
        )
        work = []
        for r in texted:
            text = fill_token(
                r.body or "", tokens.get(r.token_bill_id) if r.token_bill_id else None
            )
            made = created.get(r.event_id)
            if made is None:
                work.append(self._seen_before(r, text, r.user_id in withheld))
            elif not made.to or r.user_id in withheld:
                why = UNVERIFIED if made.to else "no phone number"
                await store.mark_failed(made.notification_id, self._sender.name, why)
                outcome[r.event_id] = Disposition.DONE
            else:
                work.append(self._send(made.notification_id, made.to, r, text))
        results = await asyncio.gather(*work)
        sent: dict[str, dict[uuid.UUID, str]] = {}
        for event_id, disposition, done in results:
            outcome[event_id] = disposition
            if done is not None:
                sent.setdefault(done.sender, {})[done.notification_id] = done.provider_message_id
        for sender, messages in sent.items():
            # Recorded before the poller may delete the messages.
            await store.mark_sent(sender, messages)
            self._metrics.sms_sent.labels(sender=sender).inc(len(messages))
        return outcome

    def _received(self, event: Event) -> store.Received:
        try:
            body: str | None = render_sms(
                event.payload, self._currency, sms_reference(event.event_id)
            )
        except UnknownEvent as exc:
            log.warning("no SMS for event %s: %s", event.event_id, exc)
            body = None
        return store.Received(
            event.event_id, event.type, event.payload.user_id, body, token_bill(event.payload)
        )

    async def _seen_before(self, r: store.Received, text: str, withheld: bool) -> _Outcome:
        """A redelivery, or a duplicate of an event another consumer holds.
        ``text`` is the SMS as sent, its token filled in."""
        assert r.body is not None
        phones = await store.phones_of({r.user_id} if r.user_id is not None else set())
        phone = phones.get(r.user_id) if r.user_id is not None else None
        notification = await store.ensure_notification(
            r.event_id, r.event_type, r.user_id, phone or "", r.body, r.token_bill_id
        )
        if notification.status != store.QUEUED:
            self._metrics.sqs_duplicates_skipped.inc()
            return r.event_id, Disposition.DUPLICATE, None
        if not phone or withheld:
            why = UNVERIFIED if phone else "no phone number"
            await store.mark_failed(notification.id, self._sender.name, why)
            return r.event_id, Disposition.DONE, None
        if not await store.claim(notification.id, self._lease):
            return r.event_id, Disposition.DEFER, None
        if notification.attempts:
            # An earlier attempt may have reached the provider before whoever
            # made it died or gave up: ask the provider before texting again.
            earlier_text = fill_token(
                notification.body,
                (await store.tokens_of({notification.token_bill_id})).get(
                    notification.token_bill_id
                )
                if notification.token_bill_id
                else None,
            )
            earlier = SmsMessage(notification.to or phone, earlier_text, str(r.event_id))
            since = notification.created_at - EARLIER_SEND_SLACK
            try:
                found = await asyncio.wait_for(
                    self._sender.find(earlier, since), self._lease.seconds * 0.9
                )
            except (SmsError, TimeoutError) as exc:
                log.warning("looking up an earlier SMS for event %s failed: %s", r.event_id, exc)
                await store.release(notification.id, "looking up an earlier send failed")
                return r.event_id, Disposition.RETRY, None
            if found is not None:
                self._metrics.sms_found_sent.labels(sender=found.sender).inc()
                done = _Sent(notification.id, found.sender, found.provider_message_id)
                return r.event_id, Disposition.DONE, done
        return await self._send(notification.id, phone, r, text)

    async def _send(
        self, notification_id: uuid.UUID, phone: str, r: store.Received, text: str
    ) -> _Outcome:
        sender = self._sender.name
        with log_context(event_id=str(r.event_id)):
            try:
                # Bounded by the lease, so no other consumer can claim the row
                # (and send again) while this send is still under way.
                receipt = await asyncio.wait_for(
                    self._sender.send(SmsMessage(phone, text, str(r.event_id))),
                    self._lease.seconds * 0.9,
                )
            except TimeoutError:
                self._metrics.sms_failed.labels(sender=sender).inc()
                await store.release(notification_id, "the SMS send timed out")
                return r.event_id, Disposition.RETRY, None
            except SmsError as exc:
                self._metrics.sms_failed.labels(sender=sender).inc()
                if exc.permanent:
                    log.warning("SMS for event %s refused for good: %s", r.event_id, exc)
                    await store.mark_failed(notification_id, sender, str(exc))
                    return r.event_id, Disposition.DONE, None
                log.warning("SMS for event %s failed for now: %s", r.event_id, exc)
                await store.release(notification_id, str(exc))
                return r.event_id, Disposition.RETRY, None
        done = _Sent(notification_id, receipt.sender, receipt.provider_message_id)
        return r.event_id, Disposition.DONE, done


_Outcome = tuple[uuid.UUID, Disposition, _Sent | None]
