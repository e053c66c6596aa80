"""Prometheus metrics for one daemon, and the per-agent bookkeeping behind them.

Every ``Metrics`` owns its own registry rather than the process-wide default, so
several apps or daemons built in one test process never collide on names.
Labels carry bounded values only (agent names, route templates, methods,
status codes, sender kinds): never user ids, phone numbers or raw paths.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from voltpay import __version__
from voltpay.domain.events import rfc3339

# From half a millisecond (an in-memory reply) to ten seconds (a vend that is
# about to time out), roughly 2.5x apart so p50 and p99 stay readable.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# A failure as operators see it: its class and what kind of part failed,
# never its text, which may carry a query's values, an address or whatever
# a message said (the text goes to the log, which masks secrets). The first
# class in the error's MRO from one of these modules gives its code.
_ERROR_CODES: tuple[tuple[str, str], ...] = (
    ("tortoise.", "database"),
    ("asyncpg.", "database"),
    ("sqlite3.", "database"),
    ("pypika.", "database"),
    ("botocore.", "bus"),
    ("aiobotocore.", "bus"),
    ("voltpay.bridges.sns.", "bus"),
    ("voltpay.bridges.sqs.", "bus"),
    ("twilio.", "sms"),
    ("voltpay.bridges.sms.", "sms"),
    ("voltpay.bridges.electricity.", "provider"),
    ("voltpay.domain.vending.", "provider"),
    ("aiohttp.", "network"),
)


def error_code(error: BaseException) -> str:
    """A stable snake_case name for the kind of failure ``error`` is."""
    for cls in type(error).__mro__:
        module = cls.__module__ + "."
        for prefix, code in _ERROR_CODES:
            if module.startswith(prefix):
                return code
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, OSError):
        return "network"
    return "internal"


AgentState = Literal["running", "stopped", "crashed"]


class Metrics:
    """The daemon's metrics, each an attribute, all in ``self.registry``."""

    def __init__(self, *, version: str = __version__, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        if process_metrics:
            # The default registry carries these; a private registry must add
            # them itself or operators lose memory, CPU and descriptor graphs.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

        agent = ("agent",)
        self.agent_processed = Counter(
            "voltpay_agent_messages_processed_total",
            "Messages an agent finished handling, failed ones included.",
            agent,
            registry=registry,
        )
        self.agent_failures = Counter(
            "voltpay_agent_failures_total",
            "Messages whose handler failed.",
            agent,
            registry=registry,
        )
        self.agent_duration = Histogram(
            "voltpay_agent_handling_duration_seconds",
            "Time an agent spent handling one message.",
            agent,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.agent_mailbox_depth = Gauge(
            "voltpay_agent_mailbox_depth",
            "Messages waiting in an agent's mailbox.",
            agent,
            registry=registry,
        )
        self.agent_mailbox_capacity = Gauge(
            "voltpay_agent_mailbox_capacity",
            "How many messages an agent's mailbox holds before senders are refused.",
            agent,
            registry=registry,
        )
        self.agent_in_flight = Gauge(
            "voltpay_agent_in_flight",
            "Messages an agent is handling right now.",
            agent,
            registry=registry,
        )

        self.outbox_waiting = Gauge(
            "voltpay_outbox_waiting_rows",
            "Outbox rows not yet published.",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "voltpay_outbox_oldest_waiting_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none wait).",
            registry=registry,
        )
        self.outbox_yielding = Gauge(
            "voltpay_outbox_yielding",
            "1 while the outbox relay yields to API requests waiting for the CPU "
            "(publishing only its floor rate), else 0.",
            registry=registry,
        )
        self.outbox_published = Counter(
            "voltpay_outbox_published_total",
            "Outbox rows published to SNS.",
            registry=registry,
        )
        self.outbox_publish_failures = Counter(
            "voltpay_outbox_publish_failures_total",
            "Outbox rows whose publish attempt failed (they are retried).",
            registry=registry,
        )

        self.sqs_received = Counter(
            "voltpay_sqs_received_total",
            "Messages received from the SQS queue.",
            registry=registry,
        )
        self.sqs_deleted = Counter(
            "voltpay_sqs_deleted_total",
            "Messages deleted from the SQS queue after handling.",
            registry=registry,
        )
        self.sqs_duplicates_skipped = Counter(
            "voltpay_sqs_duplicates_skipped_total",
            "Messages skipped because their eventId was already handled.",
            registry=registry,
        )
        self.sqs_visibility_extensions = Counter(
            "voltpay_sqs_visibility_extensions_total",
            "Visibility timeout extensions for messages still being handled.",
            registry=registry,
        )
        self.sqs_dead_letter_messages = Gauge(
            "voltpay_sqs_dead_letter_messages",
            "Approximate number of messages in the dead-letter queue.",
            registry=registry,
        )
        self.sqs_dead_letter_oldest_age = Gauge(
            "voltpay_sqs_dead_letter_oldest_age_seconds",
            "Seconds since the oldest dead letter seen was sent, from a look at up to "
            "ten of them (SentTimestamp): exact while the queue holds ten or fewer, "
            "a lower bound beyond; 0 when the queue is empty.",
            registry=registry,
        )
        self.events_rejected = Counter(
            "voltpay_events_rejected_total",
            "Bus messages refused before any agent saw them and moved to the "
            "dead-letter queue, by reason (forged, unsigned, malformed, stale, "
            "control_chars, unknown_user, too_large).",
            ("reason",),
            registry=registry,
        )

        self.fundings = Counter(
            "voltpay_fundings_total",
            "Funding intents and operator credits by outcome: initiated, credited, "
            "failed, expired, needs_review (a verified payment that does not match its "
            "intent, not credited), operator_credited, operator_reversed.",
            ("outcome",),
            registry=registry,
        )
        self.gateway_webhooks = Counter(
            "voltpay_gateway_webhooks_total",
            "Payment gateway webhooks by result: credited, duplicate, unknown_reference, "
            "deferred, bad_signature, ignored, and the intent statuses.",
            ("result",),
            registry=registry,
        )

        sender = ("sender",)
        self.sms_sent = Counter(
            "voltpay_sms_sent_total",
            "SMS messages handed to a sender successfully.",
            sender,
            registry=registry,
        )
        self.sms_failed = Counter(
            "voltpay_sms_failed_total",
            "SMS messages a sender failed to send.",
            sender,
            registry=registry,
        )
        self.sms_found_sent = Counter(
            "voltpay_sms_found_sent_total",
            "SMS messages found already accepted by the provider when an earlier "
            "attempt's outcome was unknown (a crash or a lost answer), so not sent again.",
            sender,
            registry=registry,
        )

        self.http = HttpStats(DURATION_BUCKETS)
        registry.register(self.http)
        self.http_requests = self.http.requests_family
        self.http_duration = self.http.duration_family

        self.build_info = Gauge(
            "voltpay_build_info",
            "Always 1; the version label says which build is running.",
            ("version",),
            registry=registry,
        )
        self.build_info.labels(version=version).set(1)

        self._agents: dict[str, AgentStats] = {}

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (e.g. ``voltpay_sqs_received_total``)."""
        return self.registry.get_sample_value(name, labels or {})

    def agent(self, name: str, capacity: int) -> AgentStats:
        """The stats of agent ``name``, created on first use."""
        stats = self._agents.get(name)
        if stats is None:
            stats = AgentStats(name=name, capacity=capacity, metrics=self)
            self._agents[name] = stats
        else:
            stats.set_capacity(capacity)
        return stats

    def agents(self) -> list[AgentStats]:
        """Every registered agent, in registration order."""
        return list(self._agents.values())


@dataclass(eq=False)
class AgentStats:
    """One agent's state as operators see it; each method keeps the metrics in step.

    Call ``enqueued`` when a message enters the mailbox, ``dequeued`` when the
    agent takes it out, ``began`` when its handler starts and ``succeeded`` or
    ``failed`` when it ends. ``processed`` counts every handled message and
    ``failures`` the subset that failed, so their ratio is the failure rate.
    """

    name: str
    capacity: int
    metrics: Metrics = field(repr=False)
    state: AgentState = "stopped"
    depth: int = 0
    in_flight: int = 0
    processed: int = 0
    # Not ``failed``: that name is the method below.
    failures: int = 0
    last_error: str | None = None  # the failure's class
    last_error_code: str | None = None  # error_code()
    last_error_at: datetime | None = None

    def __post_init__(self) -> None:
        # Bound once: agents update these per message, and labels() takes a
        # lock and a dict lookup every time.
        metrics, agent = self.metrics, self.name
        self._processed = metrics.agent_processed.labels(agent=agent)
        self._failures = metrics.agent_failures.labels(agent=agent)
        self._duration = metrics.agent_duration.labels(agent=agent)
        self._depth = metrics.agent_mailbox_depth.labels(agent=agent)
        self._capacity = metrics.agent_mailbox_capacity.labels(agent=agent)
        self._in_flight = metrics.agent_in_flight.labels(agent=agent)
        self._capacity.set(self.capacity)
        self._depth.set(self.depth)
        self._in_flight.set(self.in_flight)

    def started(self) -> None:
        self.state = "running"

    def stopped(self) -> None:
        self.state = "stopped"

    def crashed(self, error: BaseException) -> None:
        """The agent's loop itself died (not one message): it serves nothing now."""
        self.state = "crashed"
        self._remember(error)

    def enqueued(self) -> None:
        self.set_depth(self.depth + 1)

    def dequeued(self) -> None:
        self.set_depth(self.depth - 1)

    def set_depth(self, depth: int) -> None:
        """For agents that can read their mailbox's size directly."""
        self.depth = max(0, depth)
        self._depth.set(self.depth)

    def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity
        self._capacity.set(capacity)

    def began(self) -> None:
        self.in_flight += 1
        self._in_flight.set(self.in_flight)

    def succeeded(self, duration_seconds: float) -> None:
        self._finished(duration_seconds)

    def failed(self, duration_seconds: float, error: BaseException) -> None:
        self._finished(duration_seconds)
        self.failures += 1
        self._failures.inc()
        self._remember(error)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.name,
            "state": self.state,
            "mailboxDepth": self.depth,
            "mailboxCapacity": self.capacity,
            "inFlight": self.in_flight,
            "processed": self.processed,
            "failed": self.failures,
            "lastError": self.last_error,
            "lastErrorCode": self.last_error_code,
            "lastErrorAt": rfc3339(self.last_error_at) if self.last_error_at else None,
        }

    def _finished(self, duration_seconds: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._in_flight.set(self.in_flight)
        self.processed += 1
        self._processed.inc()
        self._duration.observe(max(0.0, duration_seconds))

    def _remember(self, error: BaseException) -> None:
        self.last_error = type(error).__name__
        self.last_error_code = error_code(error)
        self.last_error_at = datetime.now(UTC)


class HttpStats(Collector):
    """``voltpay_http_requests_total`` and ``voltpay_http_request_duration_seconds``.

    Every request records into these, so they are plain counts in dicts,
    turned into Prometheus families only when scraped, without the lock per
    increment and the loop over the buckets per observation that a
    prometheus_client Counter and Histogram cost each request. Everything
    runs on the one event loop, so nothing needs a lock.
    """

    REQUESTS = "voltpay_http_requests"
    DURATION = "voltpay_http_request_duration_seconds"
    IN_FLIGHT = "voltpay_http_requests_in_flight"
    CLOSED = "voltpay_http_connections_closed"
    _REQUEST_LABELS = ("route", "method", "status")
    _DURATION_LABELS = ("route", "method")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = list(buckets)
        self._edges = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._requests: dict[tuple[str, str, int], float] = {}
        # (route, method) -> [count per bucket, the last one +Inf], and the sum
        self._durations: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        # Requests begun and not yet answered (the front keeps the count).
        self.in_flight = 0
        # Connections the listener's guard closed: over a client's share, or
        # with no whole request head in time.
        self.refused_connections = 0
        self.slow_connections_closed = 0
        self.requests_family = _Family(self._REQUEST_LABELS, self._count)
        self.duration_family = _Family(self._DURATION_LABELS, self._observe)

    def route(self, route: str) -> Callable[[str, int, float], None]:
        """What the front calls on every request of one route: its count by
        method and status, and its duration, with the route's histograms
        looked up once per method instead of once per request."""
        requests = self._requests
        bounds = self._bounds
        histograms: dict[str, tuple[list[int], list[float]]] = {}

        def record(method: str, status: int, seconds: float) -> None:
            key = (route, method, status)
            requests[key] = requests.get(key, 0) + 1
            found = histograms.get(method)
            if found is None:
                found = histograms[method] = self._histogram((route, method))
            found[0][bisect.bisect_left(bounds, seconds)] += 1
            found[1][0] += seconds

        return record

    def _count(self, labels: tuple[str, ...], amount: float) -> None:
        route, method, status = labels
        key = (route, method, int(status))
        self._requests[key] = self._requests.get(key, 0) + amount

    def _observe(self, labels: tuple[str, ...], seconds: float) -> None:
        counts, total = self._histogram((labels[0], labels[1]))
        counts[bisect.bisect_left(self._bounds, seconds)] += 1
        total[0] += seconds

    def _histogram(self, key: tuple[str, str]) -> tuple[list[int], list[float]]:
        """The (route, method) histogram, made on first use."""
        found = self._durations.get(key)
        if found is None:
            found = ([0] * (len(self._bounds) + 1), [0.0])
            self._durations[key] = found
        return found

    def describe(self) -> list[Metric]:
        return [
            CounterMetricFamily(self.REQUESTS, _REQUESTS_HELP, labels=self._REQUEST_LABELS),
            HistogramMetricFamily(self.DURATION, _DURATION_HELP, labels=self._DURATION_LABELS),
            GaugeMetricFamily(self.IN_FLIGHT, _IN_FLIGHT_HELP),
            CounterMetricFamily(self.CLOSED, _CLOSED_HELP, labels=("reason",)),
        ]

    def collect(self) -> list[Metric]:
        requests, duration, in_flight, closed = self.describe()
        assert isinstance(requests, CounterMetricFamily)
        assert isinstance(duration, HistogramMetricFamily)
        assert isinstance(in_flight, GaugeMetricFamily)
        for (route, method, status), value in sorted(self._requests.items()):
            requests.add_metric([route, method, str(status)], value)
        for (route, method), (counts, total) in sorted(self._durations.items()):
            buckets = list(zip(self._edges, itertools.accumulate(counts), strict=True))
            duration.add_metric([route, method], buckets, total[0])
        in_flight.add_metric([], self.in_flight)
        assert isinstance(closed, CounterMetricFamily)
        closed.add_metric(["over_client_share"], self.refused_connections)
        closed.add_metric(["no_request_in_time"], self.slow_connections_closed)
        return [requests, duration, in_flight, closed]


_REQUESTS_HELP = "HTTP requests answered, by route template, method and status code."
_DURATION_HELP = "Time to answer an HTTP request, by route template and method."
_IN_FLIGHT_HELP = "HTTP requests begun and not yet answered."
_CLOSED_HELP = (
    "Connections the listener closed: over the client's share of connections, "
    "or without a whole request head in time."
)


class _Family:
    """The ``labels(...).inc()`` / ``labels(...).observe()`` face of a family."""

    def __init__(
        self, names: tuple[str, ...], record: Callable[[tuple[str, ...], float], None]
    ) -> None:
        self._names = names
        self._record = record

    def labels(self, **labels: str) -> _Child:
        if set(labels) != set(self._names):
            raise ValueError(f"labels must be exactly {', '.join(self._names)}")
        return _Child(tuple(str(labels[name]) for name in self._names), self._record)


class _Child:
    def __init__(
        self, labels: tuple[str, ...], record: Callable[[tuple[str, ...], float], None]
    ) -> None:
        self._labels = labels
        self._record = record

    def inc(self, amount: float = 1) -> None:
        self._record(self._labels, amount)

    def observe(self, value: float) -> None:
        self._record(self._labels, value)
