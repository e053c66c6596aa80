"""Each sender's share of the daemon, and its turns while others are served.

A sender is a user (a client address before a session). Its requests in
flight are counted: past its share, a request is refused at once (429)
instead of queueing behind its own sender's flood, ahead of everybody else.

Within the share, while other senders are being served (a request in flight
or ended within the last ``ACTIVE_SECONDS``), a sender with at most
``running`` requests in flight (light) runs them all; one with more (heavy)
runs them one at a time, and the rest of its share waits its turn, in order.
A heavy sender's next request also waits while a light sender's request runs
(for at most ``HOLD_SECONDS`` once none of its own is running). The event loop, the
database pool and the agents' mailboxes serve whoever is running, first come
first served, so a quiet user's request runs beside at most the one request a
flooder had already begun. Alone, a sender runs its whole share at once.

A refused sender is also made to wait where it costs nothing: the
connection that carried the refusal is not read again until its Retry-After
has passed, so a client that ignores Retry-After sends one refused request a
second per connection, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web

from voltpay.http.problems import Problem

# How long after its last request a sender still counts as being served.
ACTIVE_SECONDS = 1.0
# How long a heavy sender with nothing running waits for light senders.
HOLD_SECONDS = 0.05
RETRY_AFTER_SECONDS = 1
_REFUSED = web.RequestKey("refused_past_share", bool)


@dataclass
class _Sender:
    share: int
    in_flight: int = 0
    running: int = 0
    light: int = 0  # of those running, how many began as light
    # Each waiting request's turn; its result says whether it ran as light.
    waiting: deque[asyncio.Future[bool]] = field(default_factory=deque)
    hold: asyncio.TimerHandle | None = None


class Shares:
    def __init__(
        self,
        *,
        per_user: int,
        per_client: int,
        running: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_user = per_user
        self._per_client = per_client
        self._running = running
        self._clock = clock
        self._senders: dict[str, _Sender] = {}
        # Senders with requests waiting their turn.
        self._heavy: dict[str, _Sender] = {}
        # Requests of light senders running now.
        self._light_running = 0
        # Senders by when their last request began or ended, oldest first.
        self._seen: OrderedDict[str, float] = OrderedDict()
        # Bearer tokens' requests in flight (a share without turns).
        self._tokens: Counter[str] = Counter()

    def taken_by_client(
        self, request: web.Request, address: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """A place in a client address's share, for a request without a session."""
        return self.taken(request, "client " + address, share=self._per_client)

    @contextlib.asynccontextmanager
    async def taken(
        self, request: web.Request, sender: str, *, share: int | None = None
    ) -> AsyncIterator[None]:
        """A place in ``sender``'s share (a user's, unless ``share`` says
        otherwise) for ``request``, held while it runs, after waiting its turn."""
        state = self._senders.get(sender)
        if state is None:
            state = self._senders[sender] = _Sender(share or self._per_user)
        if state.in_flight >= state.share:
            raise self._refusal(request, state.share)
        state.in_flight += 1
        self._saw(sender)
        try:
            light = await self._turn(sender, state)
        except BaseException:
            self._leave(sender, state)
            raise
        try:
            yield
        finally:
            # Uncounted first: the turns given next see what is left.
            self._leave(sender, state)
            self._finish(sender, state, light)

    def _leave(self, sender: str, state: _Sender) -> None:
        state.in_flight -= 1
        self._saw(sender)
        if state.in_flight == 0:
            del self._senders[sender]

    @contextlib.contextmanager
    def taken_by_token(self, request: web.Request, digest: str) -> Iterator[None]:
        """A place in a bearer token's share, taken before its session is
        looked up: a flood's refused requests then cost no database round
        trip, and hold no place in the pool that others' requests wait for."""
        if self._tokens[digest] >= self._per_user:
            raise self._refusal(request, self._per_user)
        self._tokens[digest] += 1
        try:
            yield
        finally:
            left = self._tokens[digest] - 1
            if left:
                self._tokens[digest] = left
            else:
                del self._tokens[digest]

    def running_limit(self, sender: str, state: _Sender) -> int:
        """How many of ``sender``'s requests may run at once now."""
        if not self._others_served(sender):
            return state.share
        return min(state.share, self._running if state.in_flight <= self._running else 1)

    async def _turn(self, sender: str, state: _Sender) -> bool:
        """Wait for the request's turn; whether it runs as light."""
        if not state.waiting:
            limit = self.running_limit(sender, state)
            light = state.in_flight <= limit
            if state.running < limit and (light or not self._others_light(state)):
                self._start(state, light)
                return light
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        state.waiting.append(turn)
        self._heavy[sender] = state
        self._hold(sender, state)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                # Given its turn, then cancelled before it could run: the
                # turn goes to the next in line.
                self._finish(sender, state, turn.result())
            else:
                with contextlib.suppress(ValueError):
                    state.waiting.remove(turn)
                self._give_turns(sender, state)
            raise

    def _others_light(self, state: _Sender) -> int:
        """Other senders' light requests running now."""
        return self._light_running - state.light

    def _start(self, state: _Sender, light: bool) -> None:
        state.running += 1
        if light:
            state.light += 1
            self._light_running += 1

    def _finish(self, sender: str, state: _Sender, light: bool) -> None:
        state.running -= 1
        if light:
            state.light -= 1
            self._light_running -= 1
        self._give_turns(sender, state)
        if light:
            for name, heavy in list(self._heavy.items()):
                if heavy is not state and not self._others_light(heavy):
                    self._give_turns(name, heavy)

    def _give_turns(self, sender: str, state: _Sender, *, held_long: bool = False) -> None:
        """Start ``sender``'s waiting requests, in order, while its limit and
        the light senders' allow; one goes regardless once it has been held
        ``HOLD_SECONDS`` with nothing of its own running."""
        limit = self.running_limit(sender, state)
        while state.waiting and state.running < limit:
            light = state.in_flight <= limit
            if not (light or held_long or not self._others_light(state)):
                break
            turn = state.waiting.popleft()
            if turn.done():
                continue
            self._start(state, light)
            turn.set_result(light)
            held_long = False
        if state.waiting:
            self._hold(sender, state)
            return
        self._heavy.pop(sender, None)
        if state.hold is not None:
            state.hold.cancel()
            state.hold = None

    def _hold(self, sender: str, state: _Sender) -> None:
        """With nothing of its own running, a waiting sender's next turn
        comes when the light senders' requests end, or in HOLD_SECONDS."""
        if state.running or state.hold is not None:
            return
        loop = asyncio.get_running_loop()
        state.hold = loop.call_later(HOLD_SECONDS, self._held_long, sender, state)

    def _held_long(self, sender: str, state: _Sender) -> None:
        state.hold = None
        self._give_turns(sender, state, held_long=True)

    def _saw(self, sender: str) -> None:
        self._seen[sender] = self._clock()
        self._seen.move_to_end(sender)

    def _others_served(self, sender: str) -> bool:
        """Whether a sender other than ``sender`` has a request in flight or
        had one within the last ACTIVE_SECONDS."""
        if len(self._senders) > (1 if sender in self._senders else 0):
            return True
        since = self._clock() - ACTIVE_SECONDS
        seen = self._seen
        while seen:
            _, at = next(iter(seen.items()))
            if at >= since:
                break
            seen.popitem(last=False)
        return len(seen) > (1 if sender in seen else 0)

    @staticmethod
    def _refusal(request: web.Request, share: int) -> Problem:
        request[_REFUSED] = True
        return Problem(
            429,
            "too_many_requests",
            f"at most {share} requests at once; wait for an answer before sending more",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


def hold_refused_connection(request: web.Request) -> None:
    """After a refusal past a share, read nothing more from its connection
    until the refusal's Retry-After has passed."""
    if not request.get(_REFUSED):
        return
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    with contextlib.suppress(AttributeError, RuntimeError):
        transport.pause_reading()
        asyncio.get_running_loop().call_later(RETRY_AFTER_SECONDS, _resume, transport)


def _resume(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        with contextlib.suppress(AttributeError, RuntimeError):
            transport.resume_reading()
