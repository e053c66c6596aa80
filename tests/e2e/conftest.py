"""End-to-end fixtures: ``voltpay run`` as a subprocess, the way a user meets it.

Every daemon is started by the ``daemons`` fixture, which SIGKILLs whatever is
still running at teardown (a failed test never leaves a daemon behind). A
daemon runs with ``cwd`` in a temporary folder, so the default SQLite database
lands in that folder's ``./var/``; ``pg_database`` hands out a fresh, uniquely
named PostgreSQL database and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import pytest

from tests.fakes.moto_process import moto_process
from tests.fakes.moto_server import running_moto_server

READY_TIMEOUT_SECONDS = 40.0
TOKEN_PATTERN = r"^\d{4}-\d{4}-\d{4}-\d{4}-\d{4}$"
# Inherited variables that would change how a daemon under test behaves.
_SCRUBBED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "TWILIO_EDGE", "TWILIO_REGION")

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any VOLTPAY_* or systemd variables, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("VOLTPAY_") and key not in _SCRUBBED
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


async def last_value(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` until ``done(value)`` or the deadline; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


@dataclass
class DaemonProcess:
    """One ``voltpay run`` subprocess with its output captured to files."""

    process: subprocess.Popen[bytes]
    port: int
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return (
            f"daemon pid {self.pid} (exit {self.process.poll()})\n"
            f"--- stderr ---\n{self.stderr()[-4000:]}\n--- stdout (tail) ---\n"
            f"{self.stdout()[-4000:]}"
        )

    def send(self, signum: signal.Signals) -> None:
        if self.running:
            os.kill(self.pid, signum)

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() >= deadline:
                pytest.fail(f"the daemon did not exit within {timeout} s\n{self.describe()}")
            await asyncio.sleep(0.05)
        return code

    async def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.send(signal.SIGKILL)
        await self.wait_exit(10)

    async def wait_ready(
        self, http: aiohttp.ClientSession, timeout: float = READY_TIMEOUT_SECONDS
    ) -> None:
        """Poll /readyz until it answers 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                pytest.fail(f"the daemon exited before it was ready\n{self.describe()}")
            try:
                async with http.get(
                    self.base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"/readyz was not 200 within {timeout} s\n{self.describe()}")
            await asyncio.sleep(0.1)

    def close_files(self) -> None:
        for handle in self._files:
            handle.close()
        self._files.clear()


class Daemons:
    """Starts daemons and guarantees they are gone at teardown."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._started: list[DaemonProcess] = []

    def start(
        self,
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        port: int | None = None,
        log_format: str = "json",
    ) -> DaemonProcess:
        """``python -m voltpay run`` in ``cwd`` (default: the test's tmp folder)."""
        cwd = cwd or self._root
        cwd.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        extra = {"VOLTPAY_HTTP__PORT": str(port), "VOLTPAY_LOG__FORMAT": log_format}
        extra.update(env or {})
        index = len(self._started)
        stdout_path = self._root / f"daemon-{index}.stdout.log"
        stderr_path = self._root / f"daemon-{index}.stderr.log"
        stdout = stdout_path.open("wb")
        stderr = stderr_path.open("wb")
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "voltpay", "run"],
                cwd=cwd,
                env=daemon_environment(extra),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        except BaseException:
            stdout.close()
            stderr.close()
            raise
        daemon = DaemonProcess(
            process, port, cwd, stdout_path, stderr_path, _files=[stdout, stderr]
        )
        self._started.append(daemon)
        return daemon

    def cleanup(self) -> None:
        for daemon in self._started:
            if daemon.running:
                daemon.process.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.process.wait(timeout=15)
            daemon.close_files()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    launcher = Daemons(tmp_path)
    try:
        yield launcher
    finally:
        launcher.cleanup()


def run_cli(
    args: list[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path,
    timeout: float = 30,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m voltpay ARGS`` to completion (for commands that exit by themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "voltpay", *args],
        cwd=cwd,
        env=daemon_environment(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **({} if stdin is not None else {"stdin": subprocess.DEVNULL}),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings selecting the database: the embedded default (SQLite under the
    daemon's ./var/) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    url: str = request.getfixturevalue("pg_database")
    return {"VOLTPAY_DATABASE__URL": url}


# -- SNS/SQS that outlives a daemon --------------------------------------------


@pytest.fixture(scope="session")
def external_aws_url() -> Iterator[str]:
    """moto's server in this process: an SNS/SQS endpoint that, like the real
    services, keeps its topics and queued messages across daemon restarts."""
    with running_moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def separate_aws_url() -> Iterator[str]:
    """moto's server in a process of its own: an SNS/SQS endpoint that several
    daemons share, as they share AWS, and that shares no interpreter with the
    test (whose loop a busy endpoint would otherwise slow, and the other way
    round)."""
    with moto_process() as url:
        yield url


def external_aws_env(endpoint_url: str) -> dict[str, str]:
    """Settings pointing a daemon at ``endpoint_url`` with its own topic and queues."""
    suffix = uuid.uuid4().hex[:12]
    return {
        "VOLTPAY_AWS__ENDPOINT_URL": endpoint_url,
        "VOLTPAY_AWS__TOPIC_NAME": f"e2e-events-{suffix}",
        "VOLTPAY_AWS__QUEUE_NAME": f"e2e-notifications-{suffix}",
        "VOLTPAY_AWS__DEAD_LETTER_QUEUE_NAME": f"e2e-notifications-dlq-{suffix}",
        # moto keeps answering a long poll its client abandoned at shutdown and
        # hides what it hands that poll for the visibility timeout: keep both short.
        "VOLTPAY_AWS__WAIT_TIME_SECONDS": "1",
        "VOLTPAY_AWS__VISIBILITY_TIMEOUT_SECONDS": "5",
    }


def start_several(daemons: Daemons, count: int, env: Mapping[str, str]) -> list[DaemonProcess]:
    """``count`` daemons started back to back with the same settings, each on a
    port of its own. ``env`` names one database and one ``external_aws_env``
    for all of them: one topic, one queue, one dead-letter queue."""
    return [daemons.start(env) for _ in range(count)]


async def wait_all_ready(http: aiohttp.ClientSession, started: list[DaemonProcess]) -> None:
    """Every daemon answers /readyz with 200 (any that exits fails the test)."""
    await asyncio.gather(*(daemon.wait_ready(http) for daemon in started))


def ledger_sum(transactions: list[dict[str, Any]]) -> Decimal:
    """credit + refund - debit - reversal over a wallet's ledger."""
    signs = {"credit": 1, "refund": 1, "debit": -1, "reversal": -1}
    return sum(
        (signs[item["kind"]] * Decimal(item["amount"]) for item in transactions), Decimal("0")
    )
