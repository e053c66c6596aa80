"""Which bus messages are events of ours: signed by us, and well formed.

The bus (SNS, SQS, the embedded endpoint) is a transport, not a witness:
whoever may publish to the topic or send to the queue can put any message on
it. So the outbox relay signs every event it publishes with a key the bus
never sees (kept in the database, or given by the operator), and the
consumer acts on a message only once ``read_event`` has taken it for ours.

What is signed is the envelope's exact UTF-8 bytes: the outbox row holds
them, and SNS (raw message delivery) and SQS carry them byte for byte. Those
bytes are the canonical form; nothing re-serializes an envelope between the
producer and the consumer, so there is no second form to agree on, and the
consumer verifies before it parses anything. The scheme and the key id are
bound into the MAC as well::

    HMAC-SHA256(key, b"voltpay-event-v1\\n" + key_id + b"\\n" + body)

The signature travels beside the body, as the message attribute
``signature`` with the value ``v1=<key id>:<64 hex digits>``, so the body
stays the envelope of API.md. The key id names the key (a fingerprint of it,
which tells nothing of the key), so a consumer that knows several keys
verifies with the right one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from voltpay.domain.events import (
    Event,
    MalformedEvent,
    OversizedEvent,
    StaleEvent,
    parse_envelope,
)

SIGNATURE_ATTRIBUTE = "signature"
SCHEME = "v1"
MIN_KEY_BYTES = 32
# An envelope of ours is under 2 KiB; past this a message is refused unread.
MAX_ENVELOPE_BYTES = 64 * 1024
# Daemons' clocks differ a little; an event from further ahead is not ours.
MAX_AHEAD = timedelta(minutes=5)
_PREFIX = b"voltpay-event-" + SCHEME.encode() + b"\n"


class UnsignedEvent(MalformedEvent):
    """A message without our signature."""

    reason = "unsigned"


class ForgedEvent(MalformedEvent):
    """A message whose signature is not ours for its bytes: made with another
    key, or the message altered after it was signed."""

    reason = "forged"


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def of(cls, secret: bytes) -> SigningKey:
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(f"an event signing key has at least {MIN_KEY_BYTES} bytes")
        fingerprint = hashlib.sha256(b"voltpay-event-key-id\n" + secret).hexdigest()
        return cls(fingerprint[:16], secret)


class Keyring:
    """Signs with one key; verifies with that one and any other it knows
    (events signed before the operator gave a key of their own)."""

    def __init__(self, signing: SigningKey, others: Iterable[SigningKey] = ()) -> None:
        self.signing = signing
        # The MAC's fixed start, hashed once per key: a signature or a check
        # then costs a copy and the body's own bytes.
        self._macs = {
            key.key_id: hmac.new(key.secret, _PREFIX + key.key_id.encode() + b"\n", "sha256")
            for key in (signing, *others)
        }

    def sign(self, body: bytes) -> str:
        """The ``signature`` attribute for an envelope's bytes."""
        return f"{SCHEME}={self.signing.key_id}:{self._mac(self.signing.key_id, body)}"

    def verify(self, body: bytes, signature: str | None) -> None:
        """Return when ``signature`` is ours for ``body``; raise
        ``UnsignedEvent`` or ``ForgedEvent`` otherwise."""
        if not signature:
            raise UnsignedEvent("the message carries no signature")
        scheme, _, rest = signature.partition("=")
        key_id, _, digest = rest.partition(":")
        if scheme != SCHEME or key_id not in self._macs:
            raise ForgedEvent("the signature names no key of ours")
        if not hmac.compare_digest(digest, self._mac(key_id, body)):
            raise ForgedEvent("the signature does not match the message")

    def _mac(self, key_id: str, body: bytes) -> str:
        mac = self._macs[key_id].copy()
        mac.update(body)
        return mac.hexdigest()


def read_event(
    body: str,
    signature: str | None,
    keyring: Keyring,
    *,
    now: datetime,
    max_age: timedelta,
) -> Event:
    """The event a bus message carries, once it is known to be ours: not too
    large, signed by us, strictly well formed (``parse_envelope``), and dated
    neither older than ``max_age`` (past it, the inbox may have forgotten the
    event: a replay would be texted again) nor ahead of ``now`` by more than
    the clocks' slack. Raises a ``MalformedEvent`` whose ``reason`` says why not.
    """
    if len(body) > MAX_ENVELOPE_BYTES:  # characters: each at least one byte
        raise OversizedEvent(f"the message is over {MAX_ENVELOPE_BYTES} bytes")
    try:
        data = body.encode()
    except UnicodeEncodeError:
        raise MalformedEvent("the message is not valid Unicode") from None
    if len(data) > MAX_ENVELOPE_BYTES:
        raise OversizedEvent(f"the message is over {MAX_ENVELOPE_BYTES} bytes")
    keyring.verify(data, signature)
    event = parse_envelope(data)
    if event.occurred_at < now - max_age:
        raise StaleEvent("occurredAt is older than the queue keeps events")
    if event.occurred_at > now + MAX_AHEAD:
        raise StaleEvent("occurredAt is in the future")
    return event
