"""The front door against clients that hold connections, flood /readyz or
look for the operators' routes: the real daemon, and clients at different
loopback addresses (127.0.0.2, 127.0.0.3, ...) standing for different hosts."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.client import Api, eventually
from tests.e2e.conftest import DaemonProcess, Daemons, free_port


def _client(address: str, *, limit: int = 100) -> aiohttp.ClientSession:
    """A client whose connections leave from ``address``."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=limit, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


@contextlib.asynccontextmanager
async def _open_raw(
    daemon: DaemonProcess, address: str, count: int
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    opened = [
        await asyncio.open_connection("127.0.0.1", daemon.port, local_addr=(address, 0))
        for _ in range(count)
    ]
    try:
        yield opened
    finally:
        for _, writer in opened:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _metric(http: aiohttp.ClientSession, daemon: DaemonProcess, sample: str) -> float:
    async with http.get(daemon.base_url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout=0.05)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b"" or reader.at_eof()


async def test_connections_that_never_finish_a_request_head_are_closed(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    daemon = daemons.start({"VOLTPAY_HTTP__HEADER_TIMEOUT_SECONDS": "1"})
    await daemon.wait_ready(http)
    async with _open_raw(daemon, "127.0.0.2", 40) as opened:
        for index, (_, writer) in enumerate(opened):
            if index % 2:  # half a head; the rest send nothing at all
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: voltpay\r\nX-Slow: ")
                await writer.drain()
        # Another client is served meanwhile.
        async with _client("127.0.0.3") as other, other.get(daemon.base_url + "/healthz") as ok:
            assert ok.status == 200

        async def all_closed() -> bool:
            return all([await _closed_by_server(reader) for reader, _ in opened])

        # aiohttp alone would keep every one of them open for good.
        await eventually(all_closed, timeout=30, interval=0.2, what="the slow connections closed")
    closed = await _metric(
        http, daemon, 'voltpay_http_connections_closed_total{reason="no_request_in_time"}'
    )
    assert closed >= 40


async def test_one_client_cannot_hold_more_than_its_share_of_connections(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    daemon = daemons.start({"VOLTPAY_HTTP__MAX_CONNECTIONS_PER_CLIENT": "10"})
    await daemon.wait_ready(http)
    async with _open_raw(daemon, "127.0.0.2", 25) as opened:
        request = b"GET /healthz HTTP/1.1\r\nHost: voltpay\r\n\r\n"
        answered = 0
        for reader, writer in opened:
            try:
                writer.write(request)
                await writer.drain()
                status_line = await asyncio.wait_for(reader.readline(), timeout=10)
            except (ConnectionError, TimeoutError):
                continue
            answered += status_line.startswith(b"HTTP/1.1 200")
        # The first ten are served and kept alive; the rest were closed on arrival.
        assert answered == 10
        async with _client("127.0.0.3") as other, other.get(daemon.base_url + "/healthz") as ok:
            assert ok.status == 200, "another client is not held back"
    closed = await _metric(
        http, daemon, 'voltpay_http_connections_closed_total{reason="over_client_share"}'
    )
    assert closed == 15


async def test_a_flood_of_readyz_keeps_the_instance_ready(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    daemon = daemons.start({"VOLTPAY_HTTP__MAX_CONNECTIONS_PER_CLIENT": "1000"})
    await daemon.wait_ready(http)
    async with _client("127.0.0.2", limit=500) as flood:

        async def ask() -> int:
            async with flood.get(daemon.base_url + "/readyz") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(ask() for _ in range(500)))
    assert statuses.count(200) == 500, sorted(set(statuses))


async def test_the_operators_routes_live_on_the_operations_listener(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    ops_port = free_port()
    daemon = daemons.start({"VOLTPAY_OPS__PORT": str(ops_port)})
    await daemon.wait_ready(http)
    ops = f"http://127.0.0.1:{ops_port}"
    for path in ("/metrics", "/api/agents"):
        async with http.get(daemon.base_url + path) as hidden:
            assert hidden.status == 404, path
        async with http.get(ops + path) as shown:
            assert shown.status == 200, path
    for base in (daemon.base_url, ops):
        async with http.get(base + "/healthz") as health:
            assert health.status == 200
    async with http.get(ops + "/api/bills") as not_there:
        assert not_there.status in (401, 404), "the API is not on the operations listener"


@pytest.mark.parametrize("path", ["/healthz", "/api/me", "/nowhere"])
async def test_answers_carry_no_versions_and_no_sniffing(
    daemons: Daemons, http: aiohttp.ClientSession, path: str
) -> None:
    daemon = daemons.start()
    await daemon.wait_ready(http)
    async with http.get(daemon.base_url + path) as response:
        assert response.headers["Server"] == "voltpay"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if path.startswith("/api/"):
            assert response.headers["Cache-Control"] == "no-store"


async def _register(http: aiohttp.ClientSession, daemon: DaemonProcess, name: str) -> str:
    password = "ample-Horse-battery-9"
    body = {"username": name, "password": password, "phoneNumber": "+2348012345678"}
    async with http.post(daemon.base_url + "/api/auth/register", json=body) as reply:
        assert reply.status == 201, await reply.text()
    return password


async def _login(session: aiohttp.ClientSession, daemon: DaemonProcess, name: str, pw: str) -> int:
    body = {"username": name, "password": pw}
    async with session.post(daemon.base_url + "/api/auth/login", json=body) as reply:
        await reply.read()
        return reply.status


async def test_a_wrong_password_storm_from_one_address_never_locks_out_the_owner(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    daemon = daemons.start()
    await daemon.wait_ready(http)
    password = await _register(http, daemon, "owner")
    async with _client("127.0.0.2") as attacker:
        storm = [await _login(attacker, daemon, "owner", f"guess-{n:03d}") for n in range(30)]
    assert storm.count(401) == 5, storm  # then each further guess waits
    assert set(storm[5:]) == {429}
    async with _client("127.0.0.3") as owner:
        assert await _login(owner, daemon, "OWNER", password) == 200


async def test_password_spraying_from_one_address_is_held_back(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    daemon = daemons.start()
    await daemon.wait_ready(http)
    password = await _register(http, daemon, "sprayed")
    async with _client("127.0.0.4") as sprayer:
        tried = [await _login(sprayer, daemon, f"user{n}", "Summer2026!") for n in range(30)]
        assert tried.count(401) == 20, tried
        assert set(tried[20:]) == {429}
        assert await _login(sprayer, daemon, "sprayed", password) == 429
    async with _client("127.0.0.5") as owner:
        assert await _login(owner, daemon, "sprayed", password) == 200


async def test_a_login_flood_is_shed_at_once_and_another_client_still_logs_in(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    daemon = daemons.start({"VOLTPAY_AUTH__MAX_FAILED_LOGINS_PER_CLIENT": "100000"})
    await daemon.wait_ready(http)
    password = await _register(http, daemon, "quiet")
    # 60 connections: within one address's share of connections, so every
    # login of the flood reaches the hashing.
    async with _client("127.0.0.6", limit=60) as flood, _client("127.0.0.7") as owner:
        flooding = [
            asyncio.create_task(_login(flood, daemon, f"ghost{n}", "not-a-password"))
            for n in range(300)
        ]
        await asyncio.sleep(0.2)
        mine = await _login(owner, daemon, "quiet", password)
        statuses = await asyncio.gather(*flooding)
    assert mine == 200, "a share of the hashing is kept for other clients"
    # The flood gets its share of the hashing, and of the requests in flight;
    # the rest is refused at once (503 busy, 429 too many requests), not queued.
    assert statuses.count(503) > 0 and set(statuses) <= {401, 429, 503}, sorted(set(statuses))


async def test_one_user_s_flood_leaves_another_user_served(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    """One user's 1,200 verifies at once, 120 connections wide, against
    another's 20: the flood is held to its share (429), the other is served."""
    daemon = daemons.start({"VOLTPAY_AGENTS__MAILBOX_SIZE": "100"})
    await daemon.wait_ready(http)
    async with _client("127.0.0.2", limit=120) as loud, _client("127.0.0.3") as quiet:
        flooder = await Api(loud, daemon.base_url).customer()
        other = await Api(quiet, daemon.base_url).customer()
        flooding = [
            asyncio.create_task(Api(loud, daemon.base_url).bill(flooder, "10.00"))
            for _ in range(1200)
        ]
        await asyncio.sleep(0.2)
        mine = []
        for _ in range(4):  # 20 verifies, five at a time
            mine += await asyncio.gather(
                *(Api(quiet, daemon.base_url).bill(other, "10.00") for _ in range(5))
            )
        flood = await asyncio.gather(*flooding)
    assert [reply.status for reply in mine] == [201] * 20, {r.status for r in mine}
    statuses = Counter(reply.status for reply in flood)
    assert set(statuses) <= {201, 429} and statuses[429] > 0, statuses
    assert all(reply.body["code"] == "too_many_requests" for reply in flood if reply.status == 429)
