"""Create (or find) the topic, queues and subscription the daemon needs.

Every step is idempotent, so every daemon runs it at start-up and two daemons
may run it at once. Resources the settings name (topic_arn, queue_url,
dead_letter_queue_url) belong to whoever named them: they are used as they
are, never created or reconfigured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voltpay.bridges.aws import AwsClients
    from voltpay.config.settings import AwsSettings

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    topic_arn: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    dead_letter_queue_arn: str
    subscription_arn: str


async def provision(clients: AwsClients, settings: AwsSettings) -> Provisioned:
    sns, sqs = clients.sns, clients.sqs

    topic_arn = settings.topic_arn or await _create_topic(sns, settings.topic_name)

    dead_letter_queue_url = settings.dead_letter_queue_url or await _create_queue(
        sqs, settings.dead_letter_queue_name
    )
    dead_letter_queue_arn = await _queue_arn(sqs, dead_letter_queue_url)

    if settings.queue_url:
        queue_url = settings.queue_url
    else:
        queue_url = await _create_queue(sqs, settings.queue_name)
        # Set after creation rather than passed to CreateQueue: CreateQueue
        # fails on an existing queue whose attributes differ, which would turn
        # every settings change into a start-up failure.
        await sqs.set_queue_attributes(
            QueueUrl=queue_url,
            Attributes={
                "VisibilityTimeout": str(settings.visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": dead_letter_queue_arn,
                        "maxReceiveCount": str(settings.max_receive_count),
                    }
                ),
            },
        )
    queue_arn = await _queue_arn(sqs, queue_url)
    if not settings.queue_url:
        await sqs.set_queue_attributes(
            QueueUrl=queue_url,
            Attributes={"Policy": json.dumps(topic_may_send_policy(topic_arn, queue_arn))},
        )

    subscription_arn = await _ensure_subscription(sns, topic_arn, queue_arn)
    _log.info(
        "AWS resources ready: topic %s, queue %s, dead-letter queue %s",
        topic_arn,
        queue_url,
        dead_letter_queue_url,
    )
    return Provisioned(
        topic_arn=topic_arn,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dead_letter_queue_url=dead_letter_queue_url,
        dead_letter_queue_arn=dead_letter_queue_arn,
        subscription_arn=subscription_arn,
    )


def topic_may_send_policy(topic_arn: str, queue_arn: str) -> dict[str, Any]:
    """The queue policy without which SNS silently drops what it should deliver."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "voltpay-topic-sends",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


async def _create_topic(sns: Any, name: str) -> str:
    response = await sns.create_topic(Name=name)
    return str(response["TopicArn"])


async def _create_queue(sqs: Any, name: str) -> str:
    # With no attributes, CreateQueue returns an existing queue's URL whatever
    # its attributes are.
    response = await sqs.create_queue(QueueName=name)
    return str(response["QueueUrl"])


async def _queue_arn(sqs: Any, queue_url: str) -> str:
    response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return str(response["Attributes"]["QueueArn"])


async def _subscriptions(sns: Any, topic_arn: str, queue_arn: str) -> list[str]:
    """The confirmed subscriptions of ``queue_arn`` to ``topic_arn``."""
    found: list[str] = []
    request: dict[str, str] = {"TopicArn": topic_arn}
    while True:
        response = await sns.list_subscriptions_by_topic(**request)
        for subscription in response.get("Subscriptions", []):
            arn = subscription.get("SubscriptionArn", "")
            if (
                subscription.get("Protocol") == "sqs"
                and subscription.get("Endpoint") == queue_arn
                and arn.startswith("arn:")  # not "PendingConfirmation"
            ):
                found.append(str(arn))
        next_token = response.get("NextToken")
        if not next_token:
            return found
        request["NextToken"] = next_token


async def _ensure_subscription(sns: Any, topic_arn: str, queue_arn: str) -> str:
    """The one subscription of the queue to the topic, with raw delivery.

    An existing one is found first and used: real SNS rejects a Subscribe whose
    attributes differ from the existing subscription's. Daemons that start at
    once may all find none and all subscribe. SNS answers every such Subscribe
    (same topic, protocol, endpoint and attributes) with the one subscription;
    moto's server checks and inserts without a lock, on a thread per request,
    so two of them can each insert one. So after subscribing, the daemon looks
    again and keeps the subscription with the lowest ARN, unsubscribing the
    others: every daemon picks by the same rule, nobody ever removes the lowest
    one, and the last to look sees every one that was made. Until then, a
    second subscription only delivers an event twice, which the inbox absorbs;
    and a daemon that looked early may name one that a later daemon removes
    (nothing after start-up uses the name).
    """
    existing = await _subscriptions(sns, topic_arn, queue_arn)
    if existing:
        kept = min(existing)
        # Consumers parse the body as the event itself; an SNS envelope around
        # it would fail every message, so repair a subscription someone changed.
        await sns.set_subscription_attributes(
            SubscriptionArn=kept, AttributeName="RawMessageDelivery", AttributeValue="true"
        )
    else:
        response = await sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )
        existing = await _subscriptions(sns, topic_arn, queue_arn) or [
            str(response["SubscriptionArn"])
        ]
        kept = min(existing)
    for extra in existing:
        if extra != kept:
            _log.warning("removing a duplicate subscription of the queue: %s", extra)
            await sns.unsubscribe(SubscriptionArn=extra)
    return kept
