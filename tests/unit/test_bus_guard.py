"""The embedded bus's check: an SNS or SQS call signed with the bus's own key
pair passes; another key, a changed body, an old date, another route or no
signature at all are refused."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from voltpay.bridges.bus_guard import BusCredentials, BusGuard, Refused, check_request
from voltpay.bridges.signing import Signer

MOMENT = datetime(2026, 12, 7, 10, 30, 0, tzinfo=UTC)
URL = "http://127.0.0.1:40123"
BUS = BusCredentials.generate("us-east-1")
RECEIVE = json.dumps({"QueueUrl": URL + "/123456789012/q", "MaxNumberOfMessages": 10}).encode()
SQS_HEADERS = {
    "Content-Type": "application/x-amz-json-1.0",
    "X-Amz-Target": "AmazonSQS.ReceiveMessage",
}


def signed(
    credentials: BusCredentials,
    body: bytes = RECEIVE,
    *,
    service: str = "sqs",
    moment: datetime = MOMENT,
) -> dict[str, str]:
    """Headers as the daemon's hot calls send them (lower-case, Host included)."""
    frozen = Credentials(
        credentials.access_key_id, credentials.secret_access_key
    ).get_frozen_credentials()
    headers = Signer(
        URL + "/", service=service, region=credentials.region, clock=lambda: moment
    ).sign(SQS_HEADERS, body, frozen)
    return {"host": "127.0.0.1:40123", **{k.lower(): v for k, v in headers.items()}}


def check(
    headers: dict[str, str],
    body: bytes = RECEIVE,
    *,
    method: str = "POST",
    path: str = "/",
    query: str = "",
    now: datetime = MOMENT,
) -> str:
    return check_request(
        BUS, method=method, path=path, query=query, headers=headers, body=body, now=now
    )


def test_a_call_signed_with_the_bus_key_passes() -> None:
    assert check(signed(BUS)) == "sqs"
    assert check(signed(BUS, service="sns")) == "sns"


def test_a_call_signed_by_botocore_itself_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provisioning goes through the aiobotocore client, which signs with botocore."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: MOMENT.replace(tzinfo=None))
    body = b"Action=ListTopics&Version=2010-03-31"
    request = AWSRequest(
        "POST", URL + "/", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    SigV4Auth(Credentials(BUS.access_key_id, BUS.secret_access_key), "sns", BUS.region).add_auth(
        request
    )
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:40123"
    assert check(headers, body) == "sns"


def test_a_correct_signature_with_another_key_pair_is_refused() -> None:
    other = BusCredentials.generate("us-east-1")
    with pytest.raises(Refused, match="another key"):
        check(signed(other))
    # The bus's key id with a made-up secret: a signature that does not match.
    forged = BusCredentials(BUS.access_key_id, "made-up", BUS.region)
    with pytest.raises(Refused, match="signature does not match"):
        check(signed(forged))


def test_a_replayed_request_with_another_body_is_refused() -> None:
    headers = signed(BUS)
    changed = RECEIVE.replace(b"10", b"1")
    with pytest.raises(Refused, match="signature does not match"):
        check(headers, changed)
    # Claiming the new body's hash in a header does not help.
    headers["x-amz-content-sha256"] = botocore.auth.sha256(changed).hexdigest()
    with pytest.raises(Refused, match="signature does not match"):
        check(headers, changed)
    headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    with pytest.raises(Refused, match="not the one signed"):
        check(headers, changed)


def test_a_changed_signed_header_is_refused() -> None:
    headers = signed(BUS)
    headers["x-amz-target"] = "AmazonSQS.DeleteMessage"
    with pytest.raises(Refused, match="signature does not match"):
        check(headers)


def test_an_old_or_future_request_is_refused() -> None:
    with pytest.raises(Refused, match="too long ago"):
        check(signed(BUS), now=MOMENT + timedelta(minutes=6))
    with pytest.raises(Refused, match="too long ago"):
        check(signed(BUS), now=MOMENT - timedelta(minutes=6))
    assert check(signed(BUS), now=MOMENT + timedelta(minutes=4)) == "sqs"


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/moto-api/data.json", ""),
        ("POST", "/moto-api/reset", ""),
        ("GET", "/", "Action=ListQueues"),
        ("POST", "/", "Action=ListQueues"),
        ("POST", "/123456789012/q", ""),
    ],
)
def test_anything_but_a_call_to_the_root_is_refused(method: str, path: str, query: str) -> None:
    with pytest.raises(Refused, match="not an SNS or SQS call"):
        check(signed(BUS), method=method, path=path, query=query)


def test_no_signature_or_a_made_up_one_is_refused() -> None:
    with pytest.raises(Refused, match="no AWS4-HMAC-SHA256"):
        check({"host": "127.0.0.1:40123", "x-amz-date": "20261207T103000Z"})
    made_up = {
        "host": "127.0.0.1:40123",
        "x-amz-date": "20261207T103000Z",
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIAFAKE/20261207/us-east-1/sns/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
    }
    with pytest.raises(Refused, match="another key"):
        check(made_up)


def test_a_signature_for_another_service_or_region_is_refused() -> None:
    with pytest.raises(Refused, match="another region or service"):
        check(signed(BUS, service="dynamodb"))
    elsewhere = BusCredentials(BUS.access_key_id, BUS.secret_access_key, "eu-west-1")
    with pytest.raises(Refused, match="another region or service"):
        check(signed(elsewhere))


def test_the_guard_answers_403_and_never_calls_moto() -> None:
    reached: list[str] = []

    def moto(environ: dict[str, object], start_response: object) -> list[bytes]:
        reached.append(str(environ["PATH_INFO"]))
        return [b"moto"]

    guard = BusGuard(moto, BUS, clock=lambda: MOMENT)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses.append(status)

    def environ(path: str, headers: dict[str, str], body: bytes) -> dict[str, object]:
        env: dict[str, object] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        for name, value in headers.items():
            if name == "content-type":
                env["CONTENT_TYPE"] = value
            else:
                env["HTTP_" + name.upper().replace("-", "_")] = value
        return env

    assert guard(environ("/moto-api/reset", {}, b""), start_response) != [b"moto"]
    assert guard(environ("/", signed(BUS), RECEIVE), start_response) == [b"moto"]
    assert statuses == ["403 Forbidden"]
    assert reached == ["/"]
