"""The pipeline's hot calls, sent directly: the same answers and errors as the
client's, on moto's server; signed, and tried again as botocore's standard mode
would, against an endpoint that answers what each test says."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from botocore.exceptions import ClientError, ConnectionClosedError, ParamValidationError
from multidict import CIMultiDict

from voltpay.bridges.aws import USER_AGENT, AwsClients, client_config
from voltpay.bridges.direct import DirectCalls

REGION = "us-east-1"


async def raised(call: Awaitable[Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call
    return caught.value


async def test_receive_and_delete_answer_as_the_client_does(aws: AwsClients) -> None:
    queue_url = (await aws.sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex}"))["QueueUrl"]
    for n in range(3):
        await aws.sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=f'{{"n": {n}, "text": "€ & = +"}}',
            MessageAttributes={"eventType": {"DataType": "String", "StringValue": "bill_created"}},
        )

    received = await aws.sqs_direct.call(
        "ReceiveMessage",
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
        MessageAttributeNames=["All"],
    )

    messages = received["Messages"]
    assert sorted(json.loads(m["Body"])["n"] for m in messages) == [0, 1, 2]
    assert all(m["Body"].endswith('"text": "€ & = +"}') for m in messages)
    assert all(m["Attributes"] == {"ApproximateReceiveCount": "1"} for m in messages)
    assert all(
        m["MessageAttributes"]["eventType"]["StringValue"] == "bill_created" for m in messages
    )
    assert received["ResponseMetadata"]["HTTPStatusCode"] == 200

    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    deleted = await aws.sqs_direct.call("DeleteMessageBatch", QueueUrl=queue_url, Entries=entries)

    assert sorted(item["Id"] for item in deleted["Successful"]) == ["0", "1", "2"]
    assert not deleted.get("Failed")
    attributes = await aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_publish_batch_answers_as_the_client_does(aws: AwsClients) -> None:
    topic = (await aws.sns.create_topic(Name=f"t-{uuid.uuid4().hex}"))["TopicArn"]
    entries = [{"Id": f"e-{n}", "Message": f"message {n} € & = +"} for n in range(10)]

    direct = await aws.sns_direct.call(
        "PublishBatch", TopicArn=topic, PublishBatchRequestEntries=entries
    )
    client = await aws.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)

    for answer in (direct, client):
        assert sorted(item["Id"] for item in answer["Successful"]) == sorted(
            e["Id"] for e in entries
        )
        assert all(item["MessageId"] for item in answer["Successful"])
    assert direct.keys() == client.keys()


async def test_errors_are_the_clients_own(aws: AwsClients, moto_server_url: str) -> None:
    missing_queue = f"{moto_server_url}/123456789012/missing-{uuid.uuid4().hex}"
    missing_topic = f"arn:aws:sns:{REGION}:123456789012:missing-{uuid.uuid4().hex}"

    pairs = [
        (
            aws.sqs_direct.call("ReceiveMessage", QueueUrl=missing_queue, WaitTimeSeconds=0),
            aws.sqs.receive_message(QueueUrl=missing_queue, WaitTimeSeconds=0),
        ),
        (
            aws.sns_direct.call(
                "PublishBatch",
                TopicArn=missing_topic,
                PublishBatchRequestEntries=[{"Id": "a", "Message": "m"}],
            ),
            aws.sns.publish_batch(
                TopicArn=missing_topic, PublishBatchRequestEntries=[{"Id": "a", "Message": "m"}]
            ),
        ),
    ]
    for direct_call, client_call in pairs:
        direct, client = await raised(direct_call), await raised(client_call)
        assert type(direct) is type(client)
        assert direct.response["Error"]["Code"] == client.response["Error"]["Code"]
        assert direct.operation_name == client.operation_name


async def test_a_malformed_request_is_refused_before_it_is_sent(aws: AwsClients) -> None:
    with pytest.raises(ParamValidationError):
        await aws.sqs_direct.call("ReceiveMessage", QueueUrl="q", MaxNumberOfMessages="ten")


# --- against an endpoint that answers what the test says --------------------------------------


Answer = Callable[[], web.Response]


def ok(body: dict[str, Any]) -> Answer:
    return lambda: web.json_response(body)


class Endpoint:
    """Drops the first ``drops`` connections without an answer, then answers
    each request with the next of ``answers`` (the last one repeats)."""

    def __init__(self, answers: list[Answer], *, drops: int = 0) -> None:
        self.answers = answers
        self.drops = drops
        self.dropped = 0
        self.requests: list[tuple[CIMultiDict[str], bytes]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.dropped < self.drops:
            self.dropped += 1
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        self.requests.append((CIMultiDict(request.headers), await request.read()))
        return self.answers[min(len(self.requests), len(self.answers)) - 1]()


def signature_holds(headers: CIMultiDict[str], body: bytes, secret: str) -> bool:
    """Checks a request's SigV4 signature as AWS does, from what arrived: the
    headers it names as signed, with the values received, and the body."""
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=[^/]+/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        headers["Authorization"],
    )
    assert match is not None, headers["Authorization"]
    day, region, service, signed, signature = match.groups()
    names = signed.split(";")
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            headers["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(signature, hmac.new(key, to_sign.encode(), "sha256").hexdigest())


def sqs_error(status: int, code: str, query_code: str | None = None) -> Answer:
    headers = {"x-amzn-query-error": f"{query_code};Sender"} if query_code else {}
    body = {"__type": f"com.amazonaws.sqs#{code}", "message": "as the test says"}
    return lambda: web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def direct_to() -> AsyncIterator[Callable[[Endpoint], Awaitable[DirectCalls]]]:
    """SQS calls to an Endpoint, tried again at once (no backoff sleep)."""
    session = aioboto3.Session(
        aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name=REGION
    )
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def make(endpoint: Endpoint) -> DirectCalls:
            app = web.Application()
            app.router.add_post("/", endpoint.handle)
            server = await stack.enter_async_context(TestServer(app, host="127.0.0.1"))
            url = str(server.make_url("/")).rstrip("/")
            client = await stack.enter_async_context(
                session.client("sqs", endpoint_url=url, config=client_config(local=True))
            )
            return DirectCalls(
                client,
                credentials=await session.get_credentials(),
                http=http,
                max_attempts=3,
                user_agent=USER_AGENT,
                rng=lambda: 0.0,
            )

        yield make


async def test_each_request_is_signed_for_its_service_and_region(
    direct_to: Callable[[Endpoint], Awaitable[DirectCalls]],
) -> None:
    endpoint = Endpoint([ok({})])
    direct = await direct_to(endpoint)

    await direct.call("ReceiveMessage", QueueUrl="https://example/q", WaitTimeSeconds=0)

    [(headers, body)] = endpoint.requests
    assert json.loads(body) == {"QueueUrl": "https://example/q", "WaitTimeSeconds": 0}
    assert headers["X-Amz-Target"] == "AmazonSQS.ReceiveMessage"
    assert headers["User-Agent"] == USER_AGENT
    assert re.fullmatch(r"\d{8}T\d{6}Z", headers["X-Amz-Date"])
    authorization = headers["Authorization"]
    scope = f"{headers['X-Amz-Date'][:8]}/{REGION}/sqs/aws4_request"
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential=AKIDTEST/{scope}")
    assert "SignedHeaders=content-type;host;" in authorization
    assert "x-amz-target" in authorization
    assert signature_holds(headers, body, "secret")
    assert not signature_holds(headers, body + b" ", "secret")


async def test_a_transient_answer_is_tried_again(
    direct_to: Callable[[Endpoint], Awaitable[DirectCalls]],
) -> None:
    busy = sqs_error(503, "ServiceUnavailable")
    endpoint = Endpoint([busy, busy, ok({"Messages": []})])
    direct = await direct_to(endpoint)

    answer = await direct.call("ReceiveMessage", QueueUrl="https://example/q")

    assert answer["Messages"] == []
    assert len(endpoint.requests) == 3
    # Every attempt is signed anew (the signature carries its time).
    assert all(signature_holds(h, body, "secret") for h, body in endpoint.requests)


async def test_throttling_is_tried_again_until_the_attempts_run_out(
    direct_to: Callable[[Endpoint], Awaitable[DirectCalls]],
) -> None:
    endpoint = Endpoint([sqs_error(400, "ThrottlingException", "ThrottlingException")])
    direct = await direct_to(endpoint)

    error = await raised(direct.call("ReceiveMessage", QueueUrl="https://example/q"))

    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert len(endpoint.requests) == 3


async def test_a_refusal_is_not_tried_again_and_keeps_its_modeled_class(
    direct_to: Callable[[Endpoint], Awaitable[DirectCalls]],
) -> None:
    missing = sqs_error(400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue")
    endpoint = Endpoint([missing])
    direct = await direct_to(endpoint)

    error = await raised(direct.call("ReceiveMessage", QueueUrl="https://example/q"))

    assert isinstance(error, direct.client.exceptions.QueueDoesNotExist)
    assert error.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert len(endpoint.requests) == 1


async def test_a_dropped_connection_is_tried_again(
    direct_to: Callable[[Endpoint], Awaitable[DirectCalls]],
) -> None:
    endpoint = Endpoint([ok({"Messages": []})], drops=2)
    direct = await direct_to(endpoint)

    answer = await direct.call("ReceiveMessage", QueueUrl="https://example/q")

    assert answer["Messages"] == []
    assert endpoint.dropped == 2
    assert len(endpoint.requests) == 1


async def test_connections_that_keep_dropping_end_in_botocores_error(
    direct_to: Callable[[Endpoint], Awaitable[DirectCalls]],
) -> None:
    endpoint = Endpoint([ok({})], drops=3)
    direct = await direct_to(endpoint)

    with pytest.raises(ConnectionClosedError):
        await direct.call("ReceiveMessage", QueueUrl="https://example/q")

    assert endpoint.dropped == 3
    assert endpoint.requests == []
