"""What the consumer makes of the bus, over the real SNS/SQS API: one event
that breaks an agent holds up no other, and the operator surface shows what
kind of failure it was, never its text; a message that is not ours is
dead-lettered at once and the gauges say so; every daemon on a database
signs with one key.

The breaking event is ours (signed with the daemon's key, well formed), but the
database refuses its audit row: a trigger stands in for a fault the checks
before dispatch cannot foresee, with an error text that carries the kind of
thing that must never reach /api/agents."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from tortoise import connections

from tests.client import Api, eventually
from tests.fakes.recording_sms import RecordingSmsSender
from tests.integration.conftest import queue_depth
from voltpay.bridges.aws import AwsClients
from voltpay.daemon.runtime import Daemon
from voltpay.domain.events import rfc3339
from voltpay.models import signing_keys, sql
from voltpay.models.tables import AuditRecord

POISON = "Poison Meter"
# What the database says about it: the kind of text /api/agents must not show.
SECRET_TEXT = 'invalid byte sequence for encoding "UTF8": 0x00 for +2348099999999'
MAX_RECEIVE_COUNT = 2
DUPLICATES = "voltpay_sqs_duplicates_skipped_total"


@pytest.fixture
def sms_sender(sms: RecordingSmsSender) -> RecordingSmsSender:
    return sms


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, object]]:
    return {"aws": {"max_receive_count": MAX_RECEIVE_COUNT, "visibility_timeout_seconds": 2}}


@pytest.fixture
async def audit_refuses_the_poison(daemon: Daemon) -> AsyncIterator[None]:
    """The database refuses to audit any event naming POISON, until teardown."""
    conn = connections.get("default")
    if sql.is_sqlite(conn):
        await conn.execute_script(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log "
            f"WHEN NEW.body LIKE '%{POISON}%' BEGIN SELECT RAISE(ABORT, '{SECRET_TEXT}'); END"
        )
        drop = "DROP TRIGGER refuse_poison"
    else:
        await conn.execute_script(
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.body LIKE '%{POISON}%' THEN RAISE EXCEPTION '{SECRET_TEXT}'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
        drop = "DROP TRIGGER refuse_poison ON audit_log; DROP FUNCTION refuse_poison()"
    try:
        yield
    finally:
        await conn.execute_script(drop)


def bill_created(user_id: str, customer_name: str) -> tuple[str, str]:
    event_id = str(uuid.uuid4())
    body = orjson.dumps(
        {
            "eventId": event_id,
            "type": "bill_created",
            "version": 1,
            "occurredAt": rfc3339(datetime.now(UTC)),
            "data": {
                "userId": user_id,
                "billId": str(uuid.uuid4()),
                "meterNumber": "A654321",
                "customerName": customer_name,
                "amount": "70.00",
                "expiresAt": rfc3339(datetime.now(UTC) + timedelta(minutes=30)),
            },
        }
    ).decode()
    return event_id, body


async def test_an_event_an_agent_fails_on_holds_up_none_of_its_batch(
    api: Api,
    daemon: Daemon,
    aws: AwsClients,
    sms: RecordingSmsSender,
    audit_refuses_the_poison: None,
) -> None:
    ada = await api.customer()
    queues = daemon.pipeline.resources
    events = [bill_created(ada.user_id, f"Ada {n}") for n in range(9)]
    poison_id, poison = bill_created(ada.user_id, POISON)
    events.insert(4, (poison_id, poison))
    keyring = daemon.pipeline.keyring
    response = await aws.sqs.send_message_batch(
        QueueUrl=queues.queue_url,
        Entries=[
            {
                "Id": str(n),
                "MessageBody": body,
                "MessageAttributes": {
                    "signature": {"DataType": "String", "StringValue": keyring.sign(body.encode())}
                },
            }
            for n, (_, body) in enumerate(events)
        ],
    )
    assert len(response["Successful"]) == 10, response
    genuine = {uuid.UUID(event_id) for event_id, _ in events if event_id != poison_id}

    async def settled() -> bool:
        audited = set(await AuditRecord.all().values_list("event_id", flat=True))
        return (
            genuine <= audited
            and await queue_depth(aws, queues.queue_url) == 0
            and await queue_depth(aws, queues.dead_letter_queue_url) == 1
        )

    # The poison is received MAX_RECEIVE_COUNT times, then the redrive policy moves it.
    await eventually(settled, timeout=30)
    assert not await AuditRecord.filter(event_id=poison_id).exists()
    for event_id, _ in events:
        assert len(sms.sent_for(event_id)) == 1  # the poison's SMS too: only its audit failed
    # Each redelivery of the poison finds its SMS sent (a duplicate skipped);
    # a genuine event delivered twice would count one more.
    assert daemon.metrics.sample(DUPLICATES) == MAX_RECEIVE_COUNT - 1

    reply = await api.call("GET", "/api/agents")
    assert reply.status == 200
    audit = next(agent for agent in reply.body["agents"] if agent["agent"] == "audit")
    assert audit["failed"] >= 1
    assert audit["lastErrorCode"] == "database"
    assert audit["lastError"] and audit["lastError"].isidentifier()  # a class name, no more
    for fragment in ("0x00", "UTF8", "+2348099999999", POISON, "invalid byte"):
        assert fragment not in reply.raw.decode()


async def test_a_refused_message_is_dead_lettered_at_once_and_the_gauges_say_so(
    api: Api, daemon: Daemon, aws: AwsClients, sms: RecordingSmsSender
) -> None:
    ada = await api.customer()
    _, forged = bill_created(ada.user_id, "Call +2349000000000 to claim a bonus")
    await aws.sqs.send_message(QueueUrl=daemon.pipeline.resources.queue_url, MessageBody=forged)

    def gauges() -> tuple[float | None, ...]:
        return (
            daemon.metrics.sample("voltpay_events_rejected_total", {"reason": "unsigned"}),
            daemon.metrics.sample("voltpay_sqs_dead_letter_messages"),
            daemon.metrics.sample("voltpay_sqs_dead_letter_oldest_age_seconds"),
        )

    async def counted() -> bool:
        rejected, depth, age = gauges()
        return rejected == 1 and depth == 1 and age is not None and age > 0

    # Sampled again a second after a refusal, not on the 15 s round.
    await eventually(counted, timeout=10)
    assert await queue_depth(aws, daemon.pipeline.resources.queue_url) == 0
    assert not [message for message in sms.sent if "bonus" in message.body]


async def test_every_daemon_on_a_database_gets_the_same_signing_key(database: str) -> None:
    keys = await asyncio.gather(*(signing_keys.shared_secret() for _ in range(8)))
    assert len(set(keys)) == 1
    assert len(keys[0]) == 32
    assert await signing_keys.shared_secret() == keys[0]  # kept: a restart reads it again
