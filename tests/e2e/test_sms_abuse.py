"""SMS pumping as an abuser tries it, against the daemon as a subprocess:
registration floods from one client address, forged X-Forwarded-For, code
floods, premium numbers; and half a Twilio configuration at start-up. Each
loopback address (127.0.0.2, 127.0.0.3, ...) stands for another client."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.client import Api
from tests.e2e.conftest import Daemons, free_port, run_cli

FULL_NUMBER = re.compile(r"\+234\d{10}")


@asynccontextmanager
async def client_at(address: str, base_url: str) -> AsyncIterator[Api]:
    """The API as a client whose connections come from ``address``."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Api(session, base_url)


def _number() -> str:
    return "+23480" + f"{uuid.uuid4().int % 10**8:08d}"


async def _register(api: Api, phone: str | None = None, **headers: str) -> Any:
    return await api.call(
        "POST",
        "/api/auth/register",
        json={
            "username": "u" + uuid.uuid4().hex[:12],
            "password": "pw-" + uuid.uuid4().hex,
            "phoneNumber": phone or _number(),
        },
        headers=headers or None,
    )


async def _flood(api: Api, count: int, forwarded: Callable[[int], str]) -> list[int]:
    statuses = []
    for n in range(count):  # bounded: the limit plus a few
        reply = await _register(api, **{"X-Forwarded-For": forwarded(n)})
        statuses.append(reply.status)
        if reply.status == 429:
            assert reply.body["code"] == "too_many_signups"
            assert 1 <= int(reply.headers["Retry-After"]) <= 3600
    return statuses


async def test_one_client_registers_at_most_its_share_whatever_it_forwards(
    daemons: Daemons, http: aiohttp.ClientSession, database_env: dict[str, str]
) -> None:
    daemon = daemons.start(
        {
            **database_env,
            "VOLTPAY_SIGNUP__PER_CLIENT_PER_HOUR": "5",
            "VOLTPAY_HTTP__TRUSTED_PROXIES": "127.0.0.4/32",
        }
    )
    await daemon.wait_ready(http)
    async with client_at("127.0.0.2", daemon.base_url) as abuser:
        # Premium and foreign ranges are refused before anything is counted.
        premium = await _register(abuser, "+88212345678")
        assert premium.status == 422, premium.body
        assert premium.body["code"] == "phone_not_supported"
        # A forged X-Forwarded-For from a client that is no proxy is ignored.
        statuses = await _flood(abuser, 8, lambda n: f"198.51.100.{n}")
        assert statuses == [201] * 5 + [429] * 3
    async with client_at("127.0.0.3", daemon.base_url) as neighbour:
        assert (await _register(neighbour)).status == 201
    async with client_at("127.0.0.4", daemon.base_url) as proxy:
        # Behind the trusted proxy, each forwarded client has its own share,
        # and the abuser's own address is no fresh client there either.
        behind = await _flood(proxy, 7, lambda n: "127.0.0.9")
        assert behind == [201] * 5 + [429] * 2
        assert (await _register(proxy, **{"X-Forwarded-For": "127.0.0.10"})).status == 201
        refused = await _register(proxy, **{"X-Forwarded-For": "10.9.9.9, 127.0.0.2"})
        assert refused.status == 429
    async with client_at("127.0.0.2", daemon.base_url) as abuser:
        me = await abuser.call("GET", "/readyz")
        assert me.status == 200


async def test_codes_are_rationed_per_client_and_per_number_and_never_logged(
    daemons: Daemons, http: aiohttp.ClientSession, database_env: dict[str, str]
) -> None:
    daemon = daemons.start(
        {
            **database_env,
            "VOLTPAY_SIGNUP__VERIFY_PHONE": "true",
            "VOLTPAY_SMS__CODES_PER_CLIENT_PER_HOUR": "3",
            "VOLTPAY_LOG__LEVEL": "INFO",
        }
    )
    await daemon.wait_ready(http)
    phones = []
    async with client_at("127.0.0.2", daemon.base_url) as abuser:
        for _ in range(5):  # bounded: the limit plus two
            phone = _number()
            phones.append(phone)
            # Registered all the same; only three codes go out.
            assert (await _register(abuser, phone)).status == 201
        abuser.who = await abuser.customer(phone=_number())
        flood = await abuser.call("POST", "/api/auth/verify-phone/resend")
        assert (flood.status, flood.body["code"]) == (429, "too_many_codes")
        assert int(flood.headers["Retry-After"]) >= 1
        me = await abuser.expect(200, "GET", "/api/me")
        assert me["phoneVerified"] is False
    async with client_at("127.0.0.3", daemon.base_url) as other:
        other.who = await other.customer(phone=_number())
        # Its code went out at registration: the next waits for the
        # resend interval, however often it is asked for.
        for _ in range(3):
            again = await other.call("POST", "/api/auth/verify-phone/resend")
            assert (again.status, again.body["code"]) == (429, "too_many_codes")
        guess = await other.call("POST", "/api/auth/verify-phone", json={"code": "12345"})
        assert (guess.status, guess.body["code"]) == (422, "invalid_code")
    logs = daemon.stdout() + daemon.stderr()
    assert logs.count("key=code-") == 4, logs[-3000:]  # three from 127.0.0.2, one from .3
    assert "Your voltpay code" not in logs
    assert FULL_NUMBER.search(logs) is None
    assert "+234" in logs  # the masked numbers are there


def test_half_a_twilio_configuration_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    env = {
        "VOLTPAY_TWILIO__ACCOUNT_SID": "AC" + "0" * 32,
        "VOLTPAY_TWILIO__AUTH_TOKEN": "not-to-be-printed",
        "VOLTPAY_HTTP__PORT": str(free_port()),
    }
    done = run_cli(["run"], env, cwd=tmp_path, timeout=30)
    assert done.returncode == 78, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "VOLTPAY_TWILIO__FROM_NUMBER" in lines[0]
    assert "not-to-be-printed" not in done.stderr + done.stdout
