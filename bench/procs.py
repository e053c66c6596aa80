"""Processes under test: start, wait until they answer, watch, stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

PYTHON = sys.executable
VOLTPAY = str(Path(PYTHON).with_name("voltpay"))
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """In a child before exec: SIGTERM when the bench dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def use_uvloop() -> None:
    """The loop the daemon runs on (``voltpay run`` installs uvloop too)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int:
    """VmRSS from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_ticks() -> tuple[int, int] | None:
    """The machine's CPU time so far, in ticks: (all of it, the part stolen),
    from /proc/stat; None where there is no such file. Stolen time is time a
    virtual CPU was ready to run while the hypervisor ran another guest."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    name, *values = first.split()
    if name != "cpu" or len(values) < 8:
        return None
    ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), ticks[7]


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time stolen between two readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    async def start(self) -> None:
        environment = {**os.environ, **self.env}
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=environment,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Until ``url`` answers 200; fail with the log's tail if it dies first."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                        if reply.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer {url}:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return await process.wait()

    async def wait_quiet(
        self, *, below: float = 0.05, window: float = 0.4, timeout: float = 120.0
    ) -> float:
        """Wait until the process uses less than ``below`` of a core over two
        windows in a row; return how long that took."""
        started = time.monotonic()
        calm = 0
        previous = cpu_seconds(self.pid)
        while calm < 2 and time.monotonic() - started < timeout:
            await asyncio.sleep(window)
            now = cpu_seconds(self.pid)
            calm = calm + 1 if (now - previous) / window < below else 0
            previous = now
        return time.monotonic() - started


REPORT_MARK = "BENCH_JSON "


def marked_report(text: str) -> dict[str, Any] | None:
    """The JSON report a bench child process prints on a line of its own."""
    for line in text.splitlines():
        if line.startswith(REPORT_MARK):
            report: dict[str, Any] = json.loads(line[len(REPORT_MARK) :])
            return report
    return None
