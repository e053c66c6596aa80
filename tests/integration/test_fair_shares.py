"""A user's share of the front door: a flood past it costs others nothing
that their own requests wait for."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.client import Api
from voltpay.http.auth import token_digest
from voltpay.models import users as user_store
from voltpay.models.tables import User

SHARE = 4


@pytest.mark.parametrize("settings_overrides", [{"http": {"max_in_flight_per_user": SHARE}}])
async def test_a_token_past_its_share_is_refused_before_its_session_is_looked_up(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    flooder = await api.customer()
    other = await api.customer()
    share = SHARE
    held = token_digest(flooder.token)
    looked_up: Counter[str] = Counter()
    gate, all_held = asyncio.Event(), asyncio.Event()
    real = user_store.session_user

    async def slow_for_the_flooder(digest: str) -> User | None:
        looked_up[digest] += 1
        if digest == held:
            if looked_up[held] == share:
                all_held.set()
            await gate.wait()
        return await real(digest)

    monkeypatch.setattr(user_store, "session_user", slow_for_the_flooder)
    in_flight = [
        asyncio.create_task(api.call("GET", "/api/bills", customer=flooder)) for _ in range(share)
    ]
    try:
        await asyncio.wait_for(all_held.wait(), 10)
        # Refused at once: a request that looked up its session would wait
        # at the gate with the others.
        refused = await asyncio.wait_for(api.call("GET", "/api/bills", customer=flooder), 10)
        assert refused.status == 429 and refused.body["code"] == "too_many_requests"
        assert looked_up[held] == share
        assert (await api.call("GET", "/api/bills", customer=other)).status == 200
    finally:
        gate.set()
    assert [reply.status for reply in await asyncio.gather(*in_flight)] == [200] * share
    assert (await api.call("GET", "/api/bills", customer=flooder)).status == 200


async def _raw_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, token: str
) -> int:
    """One GET on a kept-alive connection; its status (the body is read)."""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: voltpay\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


@pytest.mark.parametrize("settings_overrides", [{"http": {"max_in_flight_per_user": 1}}])
async def test_a_connection_refused_past_its_share_is_not_read_until_its_retry_after(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that ignores Retry-After gets one refusal per connection and
    second, not one per round trip: its next request waits, unread."""
    flooder = await api.customer()
    held = token_digest(flooder.token)
    gate, holding = asyncio.Event(), asyncio.Event()
    real = user_store.session_user

    async def slow_for_the_flooder(digest: str) -> User | None:
        if digest == held and not holding.is_set():
            holding.set()
            await gate.wait()
        return await real(digest)

    monkeypatch.setattr(user_store, "session_user", slow_for_the_flooder)
    port = int(api.base_url.rsplit(":", 1)[1])
    in_flight = asyncio.create_task(api.call("GET", "/api/bills", customer=flooder))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(holding.wait(), 10)
        assert await _raw_get(reader, writer, "/api/bills", flooder.token) == 429
        gate.set()
        assert (await in_flight).status == 200
        loop = asyncio.get_running_loop()
        sent = loop.time()
        # The share is free again, but this connection is not read before
        # its Retry-After (1 s) has passed.
        assert await _raw_get(reader, writer, "/api/bills", flooder.token) == 200
        assert loop.time() - sent >= 0.9
    finally:
        gate.set()
        writer.close()
