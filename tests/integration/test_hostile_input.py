"""Input that once reached a 500: each gets a 4xx problem and changes nothing."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import uuid
from datetime import UTC, datetime

import pytest

from tests.client import Api
from tests.integration.test_api_contract import JSON, assert_problem
from voltpay.daemon.runtime import Daemon
from voltpay.domain.money import format_minor
from voltpay.domain.wallets import MAX_BALANCE_MINOR
from voltpay.models import wallets
from voltpay.models.tables import IdempotencyRecord, LedgerEntry, Wallet


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, str]:
    """Send bytes no HTTP client library would send; the status and the
    response's Content-Type."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Host: voltpay\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    lines = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", "")


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (b"1e999999999999", "amount_above_maximum"),
        (b"1e-1000030", "invalid_amount"),
        (b"-1e999999999999", "amount_not_positive"),
    ],
)
async def test_amounts_with_extreme_exponents_are_refused(
    api: Api, number: bytes, code: str
) -> None:
    who = await api.customer(funds="10.00")
    for path, body in [
        (f"/api/wallets/{who.wallet_id}/add-funds", b'{"amount": ' + number + b"}"),
        ("/api/electricity/verify", b'{"meterNumber": "A123456", "amount": ' + number + b"}"),
    ]:
        reply = await api.call("POST", path, data=body, headers={**JSON, **who.auth})
        assert_problem(reply, 422, code)
        assert reply.body["errors"][0]["field"] == "amount"
    assert await api.balance(who) == "10.00"
    assert (await api.call("GET", "/api/bills", customer=who)).body["items"] == []


@pytest.mark.parametrize(
    "limit",
    [
        "%C2%B2",  # a superscript two: str.isdigit() says yes, int() says no
        "%D9%A1",  # an Arabic-Indic one: int() would read it as 1
        "9" * 5000,  # past the digits int() converts
    ],
)
async def test_limits_that_are_not_plain_small_numbers_are_refused(api: Api, limit: str) -> None:
    who = await api.customer()
    for path in ("/api/bills", "/api/notifications", f"/api/wallets/{who.wallet_id}/transactions"):
        reply = await api.call("GET", f"{path}?limit={limit}", customer=who)
        assert_problem(reply, 422, "invalid_limit")


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
async def test_cursors_whose_time_is_outside_any_calendar_in_utc_are_refused(
    api: Api, moment: str
) -> None:
    who = await api.customer()
    raw = f"{moment}|{uuid.UUID(int=0)}".encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for path in ("/api/bills", "/api/notifications", f"/api/wallets/{who.wallet_id}/transactions"):
        reply = await api.call("GET", f"{path}?cursor={cursor}", customer=who)
        assert_problem(reply, 422, "invalid_cursor")


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "\\ud800", "password": "long enough"}',
        b'{"username": "someone", "password": "\\ud800xxxxxxx"}',
        b'{"username": "someone", "password": "long enough", "\\udfff": 1}',
    ],
)
async def test_lone_surrogates_are_refused_before_login(api: Api, body: bytes) -> None:
    reply = await api.call("POST", "/api/auth/login", data=body, headers=JSON)
    assert_problem(reply, 422, "validation_failed")


async def test_lone_surrogates_are_refused_before_register_and_pairs_are_text(api: Api) -> None:
    def body(password: bytes, *, phone: bool = True) -> bytes:
        extra = b', "phoneNumber": "+2348012345678"' if phone else b""
        return b'{"username": "' + name + b'", "password": "' + password + b'"' + extra + b"}"

    name = ("u" + uuid.uuid4().hex[:12]).encode()
    lone = body(b"\\ud800xxxxxxx")
    reply = await api.call("POST", "/api/auth/register", data=lone, headers=JSON)
    assert_problem(reply, 422, "validation_failed")
    # An escaped pair is one character (U+1F600), and a fine password.
    pair = b"pw-\\ud83d\\ude00-password"
    reply = await api.call("POST", "/api/auth/register", data=body(pair), headers=JSON)
    assert reply.status == 201, reply.body
    login = body(pair, phone=False)
    assert (await api.call("POST", "/api/auth/login", data=login, headers=JSON)).status == 200


@pytest.mark.parametrize(
    "authorization", [b"Bearer \xff\xfe", "Bearer caf\u00e9".encode(), b"Bearer \xe2\x82\xac"]
)
async def test_a_token_that_is_not_ascii_is_unauthorized(
    daemon: Daemon, authorization: bytes
) -> None:
    assert daemon.port is not None
    status, content_type = await raw_request(
        daemon.port, b"GET /api/me HTTP/1.1\r\nAuthorization: " + authorization + b"\r\n"
    )
    assert (status, content_type) == (401, "application/problem+json")


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: ^@yh", b"X-Probe: a\x00b", b"no colon here", b"Content-Length: 1, 2"],
)
async def test_a_request_that_is_not_well_formed_http_is_a_400_problem(
    daemon: Daemon, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused before any route is found, yet as every refusal: a problem
    document, and no error in the log (it is the client's mistake)."""
    assert daemon.port is not None
    caplog.set_level(logging.WARNING)
    status, content_type = await raw_request(
        daemon.port, b"GET /api/me HTTP/1.1\r\n" + header + b"\r\n"
    )
    assert (status, content_type) == (400, "application/problem+json")
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("idempotency_key", [None, "gzip-lie-1"])
async def test_a_body_that_is_not_in_its_content_encoding_is_400(
    api: Api, idempotency_key: str | None
) -> None:
    who = await api.customer(funds="10.00")
    headers = {**JSON, "Content-Encoding": "gzip"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    path = f"/api/wallets/{who.wallet_id}/add-funds"
    reply = await api.call("POST", path, data=b'{"amount": "1.00"}', headers=headers, customer=who)
    assert_problem(reply, 400, "malformed_body")
    assert await api.balance(who) == "10.00"
    # Compressed as it says, the same body is read.
    compressed = gzip.compress(b'{"amount": "1.00"}')
    reply = await api.call("POST", path, data=compressed, headers=headers, customer=who)
    assert reply.status == 200, reply.body
    assert await api.balance(who) == "11.00"


async def test_a_client_gone_mid_body_is_no_error_of_ours(
    api: Api, daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    assert daemon.port is not None
    who = await api.customer(funds="10.00")
    caplog.set_level(logging.WARNING)
    _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(
        f"POST /api/wallets/{who.wallet_id}/add-funds HTTP/1.1\r\nHost: voltpay\r\n"
        f"Authorization: Bearer {who.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n".encode()
        + b'{"amount": '
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is now reading the body
    writer.close()
    await asyncio.sleep(0.3)
    assert await api.balance(who) == "10.00"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


async def test_a_burst_of_parallel_guesses_gets_no_more_tries_than_one_by_one(
    api: Api, daemon: Daemon
) -> None:
    who = await api.customer()
    limit = daemon.settings.auth.max_failed_logins
    guesses = [{"username": who.username, "password": f"guess-{n:04d}"} for n in range(40)]
    replies = await asyncio.gather(
        *(api.call("POST", "/api/auth/login", json=guess) for guess in guesses),
        api.call("POST", "/api/auth/login", json={"username": who.username, "password": "x" * 8}),
    )
    statuses = sorted(reply.status for reply in replies)
    # Only the first ``limit`` attempts had their password checked.
    assert statuses == [401] * limit + [429] * (len(replies) - limit), statuses
    locked = await api.call(
        "POST", "/api/auth/login", json={"username": who.username, "password": who.password}
    )
    assert_problem(locked, 429, "too_many_attempts")


async def test_a_credit_past_the_largest_balance_is_refused_and_changes_nothing(
    api: Api,
) -> None:
    who = await api.customer()
    wallet_id = uuid.UUID(who.wallet_id)
    # A wallet 0.50 short of the largest balance, its ledger agreeing.
    almost = MAX_BALANCE_MINOR - 50
    await Wallet.filter(id=wallet_id).update(balance_minor=almost)
    await LedgerEntry.create(
        id=uuid.uuid4(),
        wallet_id=wallet_id,
        kind=wallets.CREDIT,
        amount_minor=almost,
        balance_after_minor=almost,
        created_at=datetime.now(UTC),
    )
    reply = await api.fund(who, "1.00")
    assert_problem(reply, 422, "balance_limit_reached")
    assert await api.balance(who) == format_minor(almost)
    assert await wallets.ledger_sum(wallet_id) == almost
    assert (await api.fund(who, "0.50")).status == 200
    assert await api.balance(who) == format_minor(MAX_BALANCE_MINOR)
    assert await wallets.ledger_sum(wallet_id) == MAX_BALANCE_MINOR


async def test_a_login_answer_is_never_stored_for_replay(api: Api) -> None:
    who = await api.customer()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    credentials = {"username": who.username, "password": who.password}
    first = await api.call("POST", "/api/auth/login", json=credentials, headers=key)
    again = await api.call("POST", "/api/auth/login", json=credentials, headers=key)
    assert (first.status, again.status) == (200, 200)
    assert "Idempotent-Replayed" not in again.headers
    assert first.body["token"] != again.body["token"]
    assert await IdempotencyRecord.filter(key=key["Idempotency-Key"]).count() == 0
    for token in (first.body["token"], again.body["token"]):
        me = await api.call("GET", "/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status == 200
    bad = await api.call(
        "POST", "/api/auth/login", json=credentials, headers={"Idempotency-Key": "\t"}
    )
    assert_problem(bad, 400, "invalid_idempotency_key")
