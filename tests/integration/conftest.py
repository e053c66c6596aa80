"""Fixtures and probes shared by the pipeline tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.recording_sms import RecordingSmsSender
from voltpay.bridges.aws import AwsClients
from voltpay.bridges.sqs import SqsConsumer
from voltpay.models.tables import AuditRecord, Notification, OutboxEvent


@pytest.fixture
def sms() -> RecordingSmsSender:
    return RecordingSmsSender()


@pytest.fixture
async def aws(moto_server_url: str) -> AsyncIterator[AwsClients]:
    """SNS and SQS clients of the test's own, to act on the daemon's topic and queues."""
    clients = await AwsClients.open(
        endpoint_url=moto_server_url, region="us-east-1", access_key_id=None, secret_access_key=None
    )
    async with clients:
        yield clients


async def queue_depth(aws: AwsClients, queue_url: str) -> int:
    """Messages in the queue, visible or in flight."""
    return await SqsConsumer(aws.sqs_direct, queue_url).depth()


async def outbox_event_ids() -> set[str]:
    return {str(e) for e in await OutboxEvent.all().values_list("event_id", flat=True)}


async def delivered(expected: int) -> bool:
    """True once ``expected`` events were written and each was texted and audited."""
    events = await outbox_event_ids()
    sent = {
        str(e) for e in await Notification.filter(status="sent").values_list("event_id", flat=True)
    }
    audited = {str(e) for e in await AuditRecord.all().values_list("event_id", flat=True)}
    return len(events) == expected and events <= sent and events <= audited
