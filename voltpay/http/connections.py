"""The listener's guard on connections: a client that opens a connection and
never finishes a request head, or one that opens more connections than its
share, holds no socket for long.

aiohttp closes an idle keep-alive connection after its keep-alive timeout,
but not one whose first request never arrives whole (its keep-alive timer
does nothing until a first request has been answered); and it lets one
address open as many connections as the process has file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_server import Server

from voltpay.http.problems import Problem
from voltpay.observability.metrics import HttpStats

log = logging.getLogger("voltpay.http")


class ConnectionGuard:
    """Open connections counted per client address, and the deadline for a
    connection's first request head."""

    def __init__(self, *, header_timeout: float, per_client: int, http: HttpStats) -> None:
        self.header_timeout = header_timeout
        self._per_client = per_client
        self._open: Counter[str] = Counter()
        self._http = http

    def admit(self, address: str) -> bool:
        if self._open[address] >= self._per_client:
            self._http.refused_connections += 1
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        left = self._open[address] - 1
        if left > 0:
            self._open[address] = left
        else:
            del self._open[address]

    def overdue(self) -> None:
        self._http.slow_connections_closed += 1


class _GuardedHandler(RequestHandler):
    def __init__(self, manager: Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(address):
            transport.close()
            return
        self._address = address
        super().connection_made(transport)
        self._deadline = self._loop.call_later(self._guard.header_timeout, self._head_overdue)

    def _head_overdue(self) -> None:
        self._deadline = None
        if self._request_count == 0 and not self._force_close:
            self._guard.overdue()
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """A request aiohttp cannot parse (its head or its framing: a bad
        Content-Length, a header with a NUL) is the client's mistake: answered
        as every refusal is, a problem document, and logged without a
        traceback. aiohttp's own answer is plain text, logged at ERROR."""
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason = (getattr(exc, "message", None) or message or "").split("\n", 1)[0]
        reason = reason.strip().rstrip(":")
        log.info("malformed request refused (%s): %s", status, reason)
        detail = "the request is not well-formed HTTP" + (f": {reason}" if reason else "")
        response = Problem(status, "malformed_request", detail).response()
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None:  # refused in connection_made: nothing began
            return
        self._guard.release(self._address)
        self._address = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


class _GuardedServer(Server):
    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, self.guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections pass ``guard``."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # aiohttp builds the Server; only how it makes a connection's handler
        # changes.
        server.__class__ = _GuardedServer
        server.guard = self._guard  # type: ignore[attr-defined]
        return server
