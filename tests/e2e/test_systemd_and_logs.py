"""The daemon under a service manager: sd_notify readiness, watchdog pings and
stopping; and its JSON log lines, request ids and secret hygiene."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.client import Api, eventually
from tests.e2e.conftest import Daemons
from tests.fakes.twilio_server import FakeTwilioServer

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Notification:
    at: float
    states: tuple[str, ...]


class NotifySocket:
    """What systemd would receive on $NOTIFY_SOCKET: a datagram per notify call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[Notification] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 65536)
            states = tuple(line for line in data.decode().split("\n") if line)
            self.received.append(Notification(time.monotonic(), states))
            self._arrived.set()

    def times_of(self, state: str) -> list[float]:
        return [n.at for n in self.received if state in n.states]

    async def wait_for(self, state: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not (times := self.times_of(state)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {state} within {timeout} s; got {self.received}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return times[0]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sock.close()


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    if len(str(tmp_path / "notify.sock")) <= _MAX_SOCKET_PATH:
        yield tmp_path
        return
    # A deeply nested tmp_path cannot hold an AF_UNIX socket path.
    with tempfile.TemporaryDirectory(prefix="vp-") as short:  # pragma: no cover
        yield Path(short)


@pytest.fixture
async def notify_socket(socket_dir: Path) -> AsyncIterator[NotifySocket]:
    listener = NotifySocket(socket_dir / "notify.sock")
    listener.start()
    try:
        yield listener
    finally:
        await listener.close()


async def test_ready_watchdog_and_stopping_notifications(
    daemons: Daemons, http: aiohttp.ClientSession, notify_socket: NotifySocket
) -> None:
    daemon = daemons.start({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "2000000"})
    await notify_socket.wait_for("READY=1", timeout=40)
    # READY=1 means serving: the very next request is answered.
    async with http.get(daemon.base_url + "/healthz") as response:
        assert response.status == 200
    async with http.get(daemon.base_url + "/readyz") as response:
        assert response.status == 200
    ready = [n for n in notify_socket.received if "READY=1" in n.states]
    assert any(state.startswith("STATUS=") for state in ready[0].states)

    # WATCHDOG_USEC=2 s: a ping every second (half the deadline).
    async def three_pings() -> bool:
        return len(notify_socket.times_of("WATCHDOG=1")) >= 3

    await eventually(three_pings, timeout=5, interval=0.1, what="three WATCHDOG=1 pings")
    pings = notify_socket.times_of("WATCHDOG=1")
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert all(0.6 <= gap <= 1.6 for gap in gaps), gaps

    daemon.send(signal.SIGTERM)
    stopping = await notify_socket.wait_for("STOPPING=1", timeout=10)
    assert await daemon.wait_exit(30) == 0
    assert len(notify_socket.times_of("READY=1")) == 1
    assert stopping > notify_socket.times_of("READY=1")[0]


async def test_json_logs_request_ids_and_no_secrets(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    account_sid = "AC" + uuid.uuid4().hex
    twilio_token = "twl" + uuid.uuid4().hex
    async with FakeTwilioServer(account_sid=account_sid, auth_token=twilio_token) as twilio:
        daemon = daemons.start(
            {
                "VOLTPAY_LOG__FORMAT": "json",
                "VOLTPAY_LOG__LEVEL": "DEBUG",
                "VOLTPAY_TWILIO__ACCOUNT_SID": account_sid,
                "VOLTPAY_TWILIO__AUTH_TOKEN": twilio_token,
                "VOLTPAY_TWILIO__FROM_NUMBER": "+15005550006",
                "VOLTPAY_TWILIO__BASE_URL": twilio.base_url,
            }
        )
        await daemon.wait_ready(http)
        api = Api(http, daemon.base_url)
        await api.register_and_login()
        password, bearer = api.me.password, api.me.token

        tagged = await api.call("GET", "/api/me", headers={"X-Request-ID": "abc-123"})
        me = tagged.body
        assert tagged.status == 200 and me["userId"] == api.me.user_id
        assert tagged.headers["X-Request-ID"] == "abc-123"
        # Without one, the daemon makes one up and says which.
        untagged = await api.call("GET", "/api/me")
        assert untagged.status == 200 and untagged.headers.get("X-Request-ID")
        # A failed login with the right username must not log the password either.
        wrong = "not-the-" + password
        await Api(http, daemon.base_url).expect(
            401, "POST", "/api/auth/login", {"username": me["username"], "password": wrong}
        )

        # The welcome SMS went out through Twilio, so the daemon used the token.
        async def welcomed() -> bool:
            return any(m["to"] == me["phoneNumber"] for m in twilio.messages)

        await eventually(welcomed, timeout=10, what="the welcome SMS through Twilio")
        assert all(request.auth_ok for request in twilio.requests)

        daemon.send(signal.SIGTERM)
        assert await daemon.wait_exit(30) == 0

    # The log goes to stderr (configure_logging's default stream); whatever
    # either stream carries must be JSON lines.
    stdout, stderr = daemon.stdout(), daemon.stderr()
    records = []
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{stream} line {number} is not JSON: {line!r}")
            assert isinstance(record, dict), line
            for key in ("timestamp", "level", "logger", "message"):
                assert key in record, f"{stream} line {number} lacks {key}: {line}"
            records.append(record)
    assert records, "the daemon logged nothing"

    http_lines = [r for r in records if r["logger"] == "voltpay.http"]
    assert len(http_lines) >= 5
    assert all(r.get("request_id") for r in http_lines), http_lines
    tagged = [r for r in http_lines if r["request_id"] == "abc-123"]
    assert len(tagged) == 1, tagged
    assert "/api/me" in tagged[0]["message"]

    everything = stdout + stderr
    for name, secret in (
        ("the password", password),
        ("the wrong password", wrong),
        ("the bearer token", bearer),
        ("the Twilio auth token", twilio_token),
    ):
        assert secret not in everything, f"{name} appears in the daemon's output"
