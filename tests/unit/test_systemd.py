from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltpay.daemon.systemd import SystemdNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and its $NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, str(path)


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_sends_each_state_to_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})

    assert notifier.enabled
    assert notifier.notify("READY=1", "STATUS=serving on 127.0.0.1:8080")
    assert notifier.notify("STOPPING=1")

    assert received(sock) == "READY=1\nSTATUS=serving on 127.0.0.1:8080"
    assert received(sock) == "STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"voltpay-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)

        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert received(sock) == "READY=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:9"}])
def test_disabled_without_a_usable_notify_socket(environ: dict[str, str]) -> None:
    notifier = SystemdNotifier(environ)

    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval() is None


def test_notify_reports_failure_instead_of_raising(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})

    assert notifier.enabled
    assert notifier.notify("READY=1") is False


def test_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    assert SystemdNotifier().notify("STATUS=hello")
    assert received(sock) == "STATUS=hello"


@pytest.mark.parametrize(
    ("extra", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_deadline_for_this_process(
    extra: dict[str, str], interval: float | None
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/run/systemd/notify", **extra})

    assert notifier.watchdog_interval() == interval


async def test_watchdog_pings_until_cancelled(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})

    task = asyncio.create_task(notifier.run_watchdog())
    pings = [
        (await asyncio.wait_for(loop.sock_recv(sock, 64), timeout=2)).decode() for _ in range(3)
    ]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert pings == ["WATCHDOG=1"] * 3


async def test_watchdog_stops_pinging_while_the_loop_is_blocked(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})
    task = asyncio.create_task(notifier.run_watchdog())
    await asyncio.sleep(0)
    assert received(sock) == "WATCHDOG=1"

    # A blocking call on the loop (the failure the watchdog exists to catch):
    # no ping may be sent until the loop runs again.
    sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        sock.recv(64)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_returns_at_once_when_not_armed() -> None:
    await asyncio.wait_for(SystemdNotifier({}).run_watchdog(), timeout=1)
