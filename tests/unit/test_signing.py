"""The hot calls' SigV4 headers are, header for header, the ones botocore's
own signer puts on the same request at the same moment."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.auth
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.serialize import create_serializer

from voltpay.bridges.forms import form_encode
from voltpay.bridges.signing import Signer

MOMENT = datetime(2026, 11, 29, 23, 59, 58, 123456, tzinfo=UTC)
STATIC = Credentials(
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
).get_frozen_credentials()
TEMPORARY = Credentials(
    "ASIAEXAMPLE", "secret/with+symbols", "session-token=="
).get_frozen_credentials()


def botocore_headers(
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    service: str,
    region: str,
    headers: dict[str, str],
    body: bytes,
    credentials: ReadOnlyCredentials,
    moment: datetime = MOMENT,
) -> dict[str, str]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment.replace(tzinfo=None))
    request = AWSRequest("POST", url, data=body, headers=dict(headers))
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


def serialized(
    service: str, operation: str, params: dict[str, object]
) -> tuple[dict[str, str], bytes]:
    model = botocore.session.get_session().get_service_model(service)
    request = create_serializer(model.protocol).serialize_to_request(
        params, model.operation_model(operation)
    )
    body = request["body"]
    data = form_encode(body) if isinstance(body, dict) else body
    return {**request["headers"], "User-Agent": "voltpay/test"}, data


PUBLISH = serialized(
    "sns",
    "PublishBatch",
    {
        "TopicArn": "arn:aws:sns:eu-west-1:000000000000:voltpay-events",
        "PublishBatchRequestEntries": [
            {"Id": "e1", "Message": '{"data": {"name": "Zoë Ọlá", "amount": "5.00"}}'},
            {"Id": "e2", "Message": "second  message\twith   spaces"},
        ],
    },
)
RECEIVE = serialized(
    "sqs",
    "ReceiveMessage",
    {"QueueUrl": "http://127.0.0.1:4566/000000000000/q", "MaxNumberOfMessages": 10},
)
DELETE = serialized(
    "sqs",
    "DeleteMessageBatch",
    {
        "QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q",
        "Entries": [{"Id": "0", "ReceiptHandle": "r"}],
    },
)


@pytest.mark.parametrize("credentials", [STATIC, TEMPORARY], ids=["static", "temporary"])
@pytest.mark.parametrize(
    ("url", "service", "request_"),
    [
        ("http://127.0.0.1:4566/", "sns", PUBLISH),
        ("https://sns.eu-west-1.amazonaws.com/", "sns", PUBLISH),
        ("http://localhost:80/", "sqs", RECEIVE),
        ("https://sqs.eu-west-1.amazonaws.com:443/", "sqs", DELETE),
        ("http://[::1]:9324/", "sqs", RECEIVE),
        ("http://Example.COM:8080/a/./b/../c d/", "sqs", DELETE),
        ("http://127.0.0.1:4566", "sqs", RECEIVE),
    ],
)
def test_the_headers_are_botocores(
    monkeypatch: pytest.MonkeyPatch,
    credentials: ReadOnlyCredentials,
    url: str,
    service: str,
    request_: tuple[dict[str, str], bytes],
) -> None:
    headers, body = request_
    ours = Signer(url, service=service, region="eu-west-1", clock=lambda: MOMENT)
    expected = botocore_headers(monkeypatch, url, service, "eu-west-1", headers, body, credentials)
    assert ours.sign(headers, body, credentials) == expected


def test_header_values_are_trimmed_and_folded_as_botocore_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = {
        "Content-Type": "  application/x-www-form-urlencoded;   charset=utf-8 ",
        "X-Custom": "a\t b",
        "Expect": "100-continue",  # never signed
        "User-Agent": "voltpay/test",
    }
    url = "http://127.0.0.1:4566/"
    ours = Signer(url, service="sns", region="us-east-1", clock=lambda: MOMENT)
    expected = botocore_headers(monkeypatch, url, "sns", "us-east-1", headers, b"", STATIC)
    assert ours.sign(headers, b"", STATIC) == expected


def test_the_signing_key_follows_the_day_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    moments = iter([MOMENT, MOMENT.replace(day=30, hour=0, minute=0, second=1), MOMENT])
    now = MOMENT
    url = "http://127.0.0.1:4566/"
    headers, body = PUBLISH

    def clock() -> datetime:
        return now

    signer = Signer(url, service="sns", region="us-east-1", clock=clock)
    for moment, credentials in zip(moments, [STATIC, STATIC, TEMPORARY], strict=True):
        now = moment
        expected = botocore_headers(
            monkeypatch, url, "sns", "us-east-1", headers, body, credentials, moment
        )
        assert signer.sign(headers, body, credentials) == expected


def test_headers_the_signer_sets_itself_are_refused() -> None:
    signer = Signer("http://127.0.0.1:4566/", service="sns", region="us-east-1")
    with pytest.raises(ValueError, match="sets x-amz-date itself"):
        signer.sign({"x-amz-date": "20260101T000000Z"}, b"", STATIC)
    with pytest.raises(ValueError, match="query string"):
        Signer("http://127.0.0.1:4566/?a=1", service="sns", region="us-east-1")
