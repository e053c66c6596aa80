"""The embedded SNS/SQS endpoint: a private bus in a child process.

It is what makes `voltpay run` work with nothing installed. moto's server runs
in a process of its own (``voltpay.bridges.bus_process``), the only holder of
the bus's state, on a free loopback port. It answers only SNS and SQS calls
signed with a key pair made at random for this start, which reaches the
child over a pipe and nobody else (``voltpay.bridges.bus_guard``); the daemon
calls it with that pair through the same clients as it calls AWS. The child
lives as long as the pipe's other end: it ends when the daemon stops it or
dies, however it dies.

A loopback port with checked signatures rather than a Unix socket: botocore
and aiohttp speak to it as to any endpoint, and a local user who finds the
port gets a 403 for every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from voltpay.bridges.bus_guard import BusCredentials
from voltpay.observability.logging import register_secret

_log = logging.getLogger(__name__)

_CHILD = "voltpay.bridges.bus_process"


@dataclass(frozen=True)
class BusAccess:
    """Where the embedded bus listens and the key pair it accepts."""

    url: str
    credentials: BusCredentials


class EmbeddedBus:
    """The bus's child process, started and stopped on demand.

    Start it from a thread that lives as long as the bus (the event loop's):
    on Linux the child is killed when the thread that started it ends.
    """

    def __init__(
        self, *, region: str, log_format: str = "json", ready_timeout_seconds: float = 30.0
    ) -> None:
        self._region = region
        self._log_format = log_format
        self._ready_timeout_seconds = ready_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._access: BusAccess | None = None
        self._credentials: BusCredentials | None = None

    @property
    def access(self) -> BusAccess:
        if self._access is None:
            raise RuntimeError("the embedded bus is not running")
        return self._access

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> BusAccess:
        """Start the child and return its address once it listens."""
        self._spawn()
        return self._wait_until_listening()

    async def astart(self) -> BusAccess:
        self._spawn()  # here: the child dies with the thread that forks it
        return await asyncio.to_thread(self._wait_until_listening)

    def stop(self, *, grace_seconds: float = 5.0) -> None:
        """Close the child's stdin and wait for it to exit (killed after the grace)."""
        process, self._process, self._access = self._process, None, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            _log.warning("the embedded bus did not stop within %.0f s; killed", grace_seconds)
            process.kill()
            process.wait()

    async def astop(self, *, grace_seconds: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, grace_seconds=grace_seconds)

    def _spawn(self) -> None:
        if self._process is not None:
            raise RuntimeError("the embedded bus is already running")
        credentials = BusCredentials.generate(self._region)
        register_secret(credentials.secret_access_key)
        # The child may ask to die with its parent only when the thread that
        # forks it lives as long as the bus.
        in_main_thread = threading.current_thread() is threading.main_thread()
        die_with = [str(os.getpid())] if in_main_thread else []
        process = subprocess.Popen(
            [sys.executable, "-m", _CHILD, *die_with],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._process = process
        self._access = None
        config = {
            "access_key_id": credentials.access_key_id,
            "secret_access_key": credentials.secret_access_key,
            "region": credentials.region,
            "log_format": self._log_format,
        }
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(config).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # it died at once; _wait_until_listening says so
        self._credentials = credentials

    def _wait_until_listening(self) -> BusAccess:
        process = self._process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + self._ready_timeout_seconds
        line = b""
        try:
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError("the embedded bus did not start in time")
                readable, _, _ = select.select([process.stdout], [], [], remaining)
                if readable:
                    chunk = os.read(process.stdout.fileno(), 256)
                    if not chunk:
                        raise RuntimeError(
                            f"the embedded bus exited at start (code {process.wait()})"
                        )
                    line += chunk
        except BaseException:
            self.stop(grace_seconds=1.0)
            raise
        process.stdout.close()
        assert self._credentials is not None
        url = line.decode().strip()
        self._access = BusAccess(url=url, credentials=self._credentials)
        _log.info("embedded SNS/SQS bus (pid %d) listening on %s", process.pid, url)
        return self._access
