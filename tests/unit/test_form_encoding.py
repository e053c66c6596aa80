"""The SNS body, URL-encoded in one pass a value, is byte for byte what
botocore would have sent; and the client settings that keep each call cheap."""

from __future__ import annotations

import random
import urllib.parse

from botocore.awsrequest import AWSRequest

from voltpay import __version__
from voltpay.bridges.aws import MAX_ATTEMPTS, client_config
from voltpay.bridges.forms import form_encode, form_quote

ALPHABET = [chr(code) for code in range(0x250)] + ["€", "😀", "\u2028", " ", "+", "&", "=", "%"]


def test_form_quote_matches_quote_plus() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        assert form_quote(text) == urllib.parse.quote_plus(text, safe="")
        assert form_quote(text.encode()) == urllib.parse.quote_plus(text.encode(), safe="")


def test_quoting_never_quotes_its_own_escapes_again() -> None:
    # '%' and '+' are replaced before the characters whose escapes bring them in.
    for text in ("%", "+", " ", "% +", "%2B+ %20", "a b+c%d", "%%++  ", '100% + 1 = {"x": 2}'):
        assert form_quote(text) == urllib.parse.quote_plus(text, safe="")


def test_the_encoded_body_is_the_one_botocore_builds() -> None:
    data: dict[str, object] = {
        "Action": "PublishBatch",
        "Version": "2010-03-31",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:voltpay-events",
        "PublishBatchRequestEntries.member.1.Id": "e-1",
        "PublishBatchRequestEntries.member.1.Message": '{"data":{"token":"1 2"},"x":"€ & = +"}',
        "PublishBatchRequestEntries.member.1.Raw": b"\x00\xff ",
        "Attempts": 3,
    }
    expected = AWSRequest(method="POST", url="https://sns.example", data=dict(data)).body
    assert form_encode(data) == expected


def test_calls_carry_a_fixed_user_agent() -> None:
    config = client_config()
    assert config.user_agent == f"voltpay/{__version__}"
    # botocore still refuses a malformed request before sending it.
    assert config.parameter_validation is True
    # Retries and timeouts are still the ones the bridges rely on.
    assert config.retries == {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}
