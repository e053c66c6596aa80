"""sd_notify(3) without libsystemd: readiness, status and watchdog pings.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines sent to
the AF_UNIX socket named by ``$NOTIFY_SOCKET``; a leading ``@`` names a socket
in the abstract namespace.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping


def _socket_address(value: str) -> str | None:
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Other forms (vsock:...) come only from VM managers, not a service unit.
    return None


class SystemdNotifier:
    """Talks to the service manager when run under systemd; a no-op otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"``, ``"STATUS=draining"``, ...) in one
        datagram. False when not under systemd or the send failed; never raises."""
        if self._address is None or not states:
            return False
        payload = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Called from the event loop: a full socket buffer must drop
                # this notification, not stall the daemon.
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError:
            return False
        return True

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the deadline, as systemd
        advises), or None when the watchdog is not armed for this process."""
        if self._address is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None
        return usec / 2 / 1_000_000

    async def run_watchdog(self) -> None:
        """Ping the watchdog until cancelled; returns at once when it is not armed.

        The pings ride on the event loop on purpose: a loop blocked for longer
        than the deadline stops them, and systemd then restarts the daemon.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
