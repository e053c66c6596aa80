"""Request/reply with an agent over a bounded faust channel.

A caller's command travels with an ``asyncio.Future``; the agent answers by
resolving it, with a result or a domain error. A mailbox that is full refuses
at once (``Overloaded``) rather than queueing without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from voltpay.domain.errors import DomainError
from voltpay.observability.logging import log_context
from voltpay.observability.metrics import AgentStats, Metrics

C = TypeVar("C")
R = TypeVar("R")
log = logging.getLogger("voltpay.agents")


class Overloaded(Exception):
    """The agent's mailbox is full; the caller should retry later."""

    def __init__(self, agent: str, retry_after_seconds: int = 1) -> None:
        super().__init__(f"the {agent} agent is at capacity")
        self.agent = agent
        self.retry_after_seconds = retry_after_seconds


class Stopped(Exception):
    """The agent no longer takes work (the daemon is shutting down)."""


class AgentFailure(Exception):
    """The handler failed in a way that is not a domain answer."""


@dataclass
class Envelope(Generic[C, R]):
    command: C
    reply: asyncio.Future[R]


class Mailbox(Generic[C, R]):
    """One agent's bounded inbox and the loop that answers it."""

    def __init__(
        self,
        app: Any,
        name: str,
        handler: Callable[[C], Awaitable[R]],
        *,
        capacity: int,
        concurrency: int,
        metrics: Metrics,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._handler = handler
        self._pending = 0
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats: AgentStats = metrics.agent(name, capacity)
        self.channel = app.channel(maxsize=capacity)
        app.agent(self.channel, name=name, concurrency=concurrency)(self._consume)

    @property
    def pending(self) -> int:
        return self._pending

    async def ask(self, command: C) -> R:
        if not self._accepting:
            raise Stopped(self.name)
        if self._pending >= self.capacity:
            raise Overloaded(self.name)
        reply: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._idle.clear()
        self.stats.enqueued()
        try:
            await self.channel.send(value=Envelope(command, reply))
            return await reply
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def _consume(self, stream: AsyncIterator[Envelope[C, R]]) -> None:
        async for envelope in stream:
            await self._answer(envelope)

    async def _answer(self, envelope: Envelope[C, R]) -> None:
        self.stats.dequeued()
        self.stats.began()
        started = time.perf_counter()
        with log_context(agent=self.name):
            try:
                result = await self._handler(envelope.command)
            except DomainError as exc:
                self.stats.succeeded(time.perf_counter() - started)
                _resolve(envelope.reply, error=exc)
            except Exception as exc:
                # Nothing may escape an agent body: faust would drop the
                # message and the caller would wait forever.
                log.exception("agent %s failed on %s", self.name, type(envelope.command).__name__)
                self.stats.failed(time.perf_counter() - started, exc)
                _resolve(envelope.reply, error=AgentFailure(str(exc)))
            else:
                self.stats.succeeded(time.perf_counter() - started)
                _resolve(envelope.reply, result=result)

    async def close(self) -> None:
        """Refuse new commands (``Stopped``), then wait until every accepted
        one has been answered."""
        self._accepting = False
        await self._idle.wait()


def _resolve(
    reply: asyncio.Future[Any], *, result: Any = None, error: Exception | None = None
) -> None:
    if reply.done():
        return
    if error is not None:
        reply.set_exception(error)
    else:
        reply.set_result(result)
