"""Someone else writes to the bus: forged, altered, unsigned and poisoned
messages mixed into a steady flow of genuine payments through ``voltpay run``.

moto's server runs in a process of its own, so the test publishes to the
daemon's topic and sends to its queue as anyone granted ``sns:Publish`` or
``sqs:SendMessage`` could. The poisoned envelopes are signed with the
daemon's own key (read from its database), as a producer bug during a
rolling deploy would sign them, so that they reach the envelope's checks.
Every genuine event is texted (a fake Twilio) and audited once within 30 s
of the last payment, none of them is dead-lettered, and every bad message is
dead-lettered at once and counted by its reason; no SMS carries the
attacker's text. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from tests.client import Api
from tests.e2e.conftest import DaemonProcess, Daemons, external_aws_env
from tests.fakes.twilio_server import FakeTwilioServer
from voltpay.bridges.aws import AwsClients
from voltpay.domain.event_signing import Keyring, SigningKey
from voltpay.domain.events import rfc3339

ATTACK = "Call +2349000000000 to claim a bonus"
ROUNDS = 12
DEADLINE_SECONDS = 30.0


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer(account_sid="AC" + "2" * 32, auth_token="u" * 32) as server:
        yield server


async def query(database: str | Path, statement: str) -> list[tuple[Any, ...]]:
    if isinstance(database, Path):
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
            return list(db.execute(statement).fetchall())
    connection = await asyncpg.connect(database)
    try:
        return [tuple(row) for row in await connection.fetch(statement)]
    finally:
        await connection.close()


def envelope(user_id: str, *, customer_name: str = ATTACK, **changes: Any) -> dict[str, Any]:
    """A bill_created event as our producers write it, changed as asked."""
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "type": "bill_created",
        "version": 1,
        "occurredAt": rfc3339(now),
        "data": {
            "userId": user_id,
            "billId": str(uuid.uuid4()),
            "meterNumber": "A123456",
            "customerName": customer_name,
            "amount": "70.00",
            "expiresAt": rfc3339(now + timedelta(minutes=30)),
        },
    }
    for key, value in changes.items():
        (event if key in event else event["data"])[key] = value
    return event


def text(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


class Bus:
    """The daemon's topic and queue, as someone else reaches them."""

    def __init__(self, aws: AwsClients, topic_arn: str, queue_url: str) -> None:
        self.aws = aws
        self.topic_arn = topic_arn
        self.queue_url = queue_url

    async def publish(self, body: str, signature: str | None = None) -> None:
        await self.aws.sns.publish(
            TopicArn=self.topic_arn, Message=body, MessageAttributes=_attributes(signature)
        )

    async def send(self, body: str, signature: str | None = None) -> None:
        await self.aws.sqs.send_message(
            QueueUrl=self.queue_url, MessageBody=body, MessageAttributes=_attributes(signature)
        )


def _attributes(signature: str | None) -> dict[str, Any]:
    if signature is None:
        return {}
    return {"signature": {"DataType": "String", "StringValue": signature}}


async def bad_messages(bus: Bus, ours: Keyring, victim: str) -> list[tuple[str, Any]]:
    """Each bad message's reason and how it is sent, the two paths in turn."""
    theirs = Keyring(SigningKey.of(b"an attacker's key, 32 bytes long"))
    forged = text(envelope(victim))
    altered_event = envelope(victim, customer_name="Ada")
    altered_signature = ours.sign(text(altered_event).encode())
    altered_event["data"]["customerName"] = ATTACK
    altered = text(altered_event)

    def signed(body: str) -> tuple[str, str]:
        return body, ours.sign(body.encode(errors="surrogatepass"))

    overflow = text(envelope(victim, occurredAt="0001-01-01T00:00:00+14:00"))
    stale = text(envelope(victim, occurredAt="2000-01-01T00:00:00.000Z"))
    nul = text(envelope(victim, customer_name="Ada\x00" + ATTACK))
    wrong_type = text(envelope(victim, amount=70))
    huge = text(envelope(victim, padding="x" * (250 * 1024)))
    not_json = '{"eventId": "' + str(uuid.uuid4()) + '", "type": "bill_created", ' + ATTACK
    bad_utf8 = text(envelope(victim)).replace("Call", "Call \\udc80", 1)
    stranger = text(envelope(str(uuid.uuid4())))
    return [
        ("forged", bus.publish(forged, theirs.sign(forged.encode()))),
        ("forged", bus.send(altered, altered_signature)),
        ("unsigned", bus.publish(text(envelope(victim)))),
        ("unsigned", bus.send(text(envelope(victim)))),
        ("malformed", bus.publish(*signed(overflow))),
        ("stale", bus.send(*signed(stale))),
        ("control_chars", bus.publish(*signed(nul))),
        ("malformed", bus.send(*signed(wrong_type))),
        ("too_large", bus.send(*signed(huge))),
        ("malformed", bus.publish(*signed(not_json))),
        ("malformed", bus.send(*signed(bad_utf8))),
        ("unknown_user", bus.publish(*signed(stranger))),
    ]


async def pay_steadily(apis: list[Api], rounds: int) -> int:
    """Each customer verifies and pays a bill a round; bills paid."""
    paid = 0
    for _ in range(rounds):
        for api in apis:
            bill = await api.bill(api.me, "25.00")
            assert bill.status == 201, bill.body
            payment = await api.pay(api.me, bill.body["billId"])
            assert payment.status == 200, payment.body
            paid += 1
        await asyncio.sleep(0.1)
    return paid


async def dead_letters(aws: AwsClients, queue_url: str) -> list[dict[str, Any]]:
    letters: dict[str, dict[str, Any]] = {}
    for _ in range(50):
        response = await aws.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        )
        batch = response.get("Messages") or []
        if not batch:
            break
        letters.update((message["MessageId"], message) for message in batch)
    return list(letters.values())


def rejected(metrics_text: str) -> Counter[str]:
    pattern = re.compile(r'^voltpay_events_rejected_total\{reason="(\w+)"\} (\S+)$', re.M)
    return Counter({reason: int(float(value)) for reason, value in pattern.findall(metrics_text)})


async def test_only_our_events_are_acted_on_and_bad_ones_harm_no_good_one(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    separate_aws_url: str,
    database_env: dict[str, str],
    twilio: FakeTwilioServer,
    tmp_path: Path,
) -> None:
    aws_env = external_aws_env(separate_aws_url)
    env = {
        **aws_env,
        **database_env,
        "VOLTPAY_TWILIO__ACCOUNT_SID": twilio.account_sid,
        "VOLTPAY_TWILIO__AUTH_TOKEN": twilio.auth_token,
        "VOLTPAY_TWILIO__FROM_NUMBER": "+15005550006",
        "VOLTPAY_TWILIO__BASE_URL": twilio.base_url,
    }
    daemon: DaemonProcess = daemons.start(env)
    await daemon.wait_ready(http)
    database: str | Path = database_env.get("VOLTPAY_DATABASE__URL") or (
        tmp_path / "var" / "voltpay.sqlite3"
    )
    [(secret,)] = await query(database, "SELECT secret FROM signing_keys")
    ours = Keyring(SigningKey.of(bytes.fromhex(secret)))

    apis = []
    for _ in range(3):
        api = await Api(http, daemon.base_url).register_and_login()
        await api.add_funds("5000.00")
        apis.append(api)

    async with await AwsClients.open(
        endpoint_url=separate_aws_url,
        region="us-east-1",
        access_key_id=None,
        secret_access_key=None,
    ) as aws:
        topic_arn = (await aws.sns.create_topic(Name=aws_env["VOLTPAY_AWS__TOPIC_NAME"]))[
            "TopicArn"
        ]
        queue_url = (await aws.sqs.get_queue_url(QueueName=aws_env["VOLTPAY_AWS__QUEUE_NAME"]))[
            "QueueUrl"
        ]
        dead_letter_url = (
            await aws.sqs.get_queue_url(QueueName=aws_env["VOLTPAY_AWS__DEAD_LETTER_QUEUE_NAME"])
        )["QueueUrl"]
        bus = Bus(aws, topic_arn, queue_url)
        attacks = await bad_messages(bus, ours, apis[0].me.user_id)
        expected = Counter(reason for reason, _ in attacks)

        async def attack() -> None:
            for _, send in attacks:
                await send
                await asyncio.sleep(0.15)

        paid, _ = await asyncio.gather(pay_steadily(apis, ROUNDS), attack())
        assert paid == 3 * ROUNDS

        # Every genuine event is texted and audited within the deadline.
        started = time.monotonic()
        untexted = (
            "SELECT COUNT(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM notifications n "
            "WHERE n.event_id = o.event_id AND n.status = 'sent') OR NOT EXISTS "
            "(SELECT 1 FROM audit_log a WHERE a.event_id = o.event_id)"
        )
        while (await query(database, untexted))[0][0]:
            if time.monotonic() - started > DEADLINE_SECONDS:
                pytest.fail(f"events not texted and audited in time\n{daemon.describe()}")
            await asyncio.sleep(0.25)

        async with http.get(daemon.base_url + "/metrics") as response:
            counted = rejected(await response.text())
        letters = await dead_letters(aws, dead_letter_url)

    committed = {str(row[0]) for row in await query(database, "SELECT event_id FROM outbox")}
    audited = await query(database, "SELECT event_id FROM audit_log")
    assert sorted(str(row[0]) for row in audited) == sorted(committed)  # each once, no other
    sent = await query(database, "SELECT event_id FROM notifications WHERE status = 'sent'")
    assert sorted(str(row[0]) for row in sent) == sorted(committed)
    assert len(twilio.messages) == len(committed)
    assert not [m for m in twilio.messages if "bonus" in m["body"] or "+234900" in m["body"]]

    # Every bad message dead-lettered, with its reason; no genuine one.
    assert counted == expected
    reasons = Counter(
        letter["MessageAttributes"]["voltpay.rejected"]["StringValue"]
        for letter in letters
        if "voltpay.rejected" in (letter.get("MessageAttributes") or {})
    )
    assert len(letters) == len(attacks)
    assert reasons == expected
    bodies = [letter["Body"] for letter in letters]
    assert not [body for body in bodies if any(event_id in body for event_id in committed)]
