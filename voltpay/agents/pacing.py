"""Pacing the event pipeline while the API is writing.

The relay and the poller share the event loop (and the CPU) with the HTTP
front. Draining a backlog at full speed (after an SNS outage, say) took most
of it: measured at 4 connections, pay fell from about 280-400 to about 70
req/s while 12,000 waiting events went out. ``Arrivals`` counts the events
committed (one ``arrived()`` per commit that wrote events); a ``Pacer`` reads
that count (several pacers may share one) and, while events keep coming, lets
its user take at most ``factor`` times their rate plus ``floor_per_second``;
with nothing arriving, there is no limit. A backlog then drains in the API's
spare time, at ``factor - 1`` times the arrival rate (plus the floor) while
the API is busy, and at full speed once it is not.

A pacer may also be told when to yield: while ``yield_to()`` is true it takes
only the floor. The relay yields while ``Load`` finds API requests waiting
for the daemon's CPU, so that payments are answered first and their events
go out once the burst is over (or once the oldest has waited its most).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# The arrival rate is the count over the last WINDOW_SECONDS, kept in
# buckets of BUCKET_SECONDS.
WINDOW_SECONDS = 2.0
BUCKET_SECONDS = 0.25
# Below this many events a second nothing is considered to be arriving.
IDLE_RATE = 1.0
# Events that may go at once while paced: two batches. A larger burst (half
# a second's worth) let four PublishBatch calls and their deliveries run back
# to back, holding up the requests in flight.
BURST = 20


class Arrivals:
    """Events committed over the last window, counted once for every pacer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: deque[list[float]] = deque()  # [bucket start, count]

    def arrived(self, count: int = 1) -> None:
        """``count`` events were committed just now."""
        now = self.clock()
        start = now - now % BUCKET_SECONDS
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([start, float(count)])
            self._forget(now)

    def rate(self) -> float:
        """Events a second over the last window."""
        self._forget(self.clock())
        return sum(count for _, count in self._buckets) / WINDOW_SECONDS

    def _forget(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - WINDOW_SECONDS:
            self._buckets.popleft()


class Load:
    """Whether API requests are waiting for the daemon's CPU.

    True while at least ``requests`` are in flight and the process used at
    least ``cpu_share`` of a CPU over the last ``CPU_WINDOW_SECONDS``. Many
    requests in flight alone may mean a slow database, which the pipeline
    yielding would not help; a busy CPU alone may be the pipeline itself.
    """

    CPU_WINDOW_SECONDS = 0.25

    def __init__(
        self,
        in_flight: Callable[[], int],
        *,
        requests: int,
        cpu_share: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        if requests < 1:
            raise ValueError("requests must be at least 1")
        self._in_flight = in_flight
        self._requests = requests
        self._cpu_share = cpu_share
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._sampled_at = clock()
        self._cpu_at = cpu_clock()
        self._share = 0.0

    def busy(self) -> bool:
        share = self.cpu_share()
        return self._in_flight() >= self._requests and share >= self._cpu_share

    def cpu_share(self) -> float:
        """CPU used over the last complete window, as a share of one CPU."""
        now = self._clock()
        elapsed = now - self._sampled_at
        if elapsed >= self.CPU_WINDOW_SECONDS:
            cpu = self._cpu_clock()
            # A window much older than one (nobody asked for a while) says
            # nothing of now: it is only a start.
            if elapsed < 4 * self.CPU_WINDOW_SECONDS:
                self._share = (cpu - self._cpu_at) / elapsed
            else:
                self._share = 0.0
            self._sampled_at = now
            self._cpu_at = cpu
        return self._share


class Pacer:
    def __init__(
        self,
        *,
        factor: float,
        floor_per_second: float,
        arrivals: Arrivals | None = None,
        clock: Callable[[], float] = time.monotonic,
        yield_to: Callable[[], bool] | None = None,
    ) -> None:
        """Paced by ``arrivals`` (shared), or by arrivals of its own on
        ``clock``; only the floor while ``yield_to()`` is true."""
        if factor < 1:
            raise ValueError("factor must be at least 1: the pipeline must keep up")
        self._factor = factor
        self._floor = floor_per_second
        self._yield_to = yield_to
        self.yielding = False
        self._arrivals = arrivals if arrivals is not None else Arrivals(clock)
        self._clock = self._arrivals.clock
        self._tokens = 0.0
        self._filled_at = self._clock()

    def arrived(self, count: int = 1) -> None:
        self._arrivals.arrived(count)

    def arrival_rate(self) -> float:
        return self._arrivals.rate()

    def allowance(self, wanted: int) -> int:
        """How many of ``wanted`` events may be taken now (all of them when
        nothing is arriving). Take them with ``spend``."""
        rate = self.arrival_rate()
        if rate < IDLE_RATE:
            self._tokens = 0.0
            self._filled_at = self._clock()
            self.yielding = False
            return wanted
        self._fill(rate)
        return min(wanted, int(self._tokens))

    def spend(self, count: int) -> None:
        self._tokens = max(0.0, self._tokens - count)

    def delay(self, count: int) -> float:
        """Seconds until ``count`` events may be taken at the current pace."""
        rate = self.arrival_rate()
        if rate < IDLE_RATE:
            return 0.0
        self._fill(rate)
        missing = count - self._tokens
        return max(0.0, missing / self._pace(rate))

    def _pace(self, rate: float) -> float:
        self.yielding = self._yield_to is not None and self._yield_to()
        if self.yielding:
            return self._floor
        return self._factor * rate + self._floor

    def _fill(self, rate: float) -> None:
        now = self._clock()
        pace = self._pace(rate)
        self._tokens = min(float(BURST), self._tokens + pace * (now - self._filled_at))
        self._filled_at = now
