"""Pay throughput with several daemons on one PostgreSQL: ``python -m bench.scaleout``.

Every round starts from nothing: a fresh, uniquely named PostgreSQL database
(``voltpay migrate``, then the bench's users, wallets and sessions), the
bench's SNS/SQS stub in a process of its own as the one external endpoint,
and N ``voltpay run`` daemons on that database and endpoint with identical
settings (the same topic and queue names), each on its own port, SMS to the
log. The stub answers at once and costs little CPU, so the cores measured are
the daemons' and PostgreSQL's. The daemons start one after another: the stub
answers a repeated Subscribe with a new subscription, where SNS returns the
existing one, so daemons subscribing at the same moment would each add one,
and it has no Unsubscribe for a daemon to remove the extras with.

The load is the bench's pay workload: C connections in total, split evenly
over the daemons, one wrk per daemon at the same time, each request paying a
pending bill of its own. A round's req/s is the sum over its wrk runs and its
p99 the worst of theirs (wrk reports percentiles, which do not merge). The
configurations run in turns (1, 2, 3, 1, 2, 3, ...), so a machine whose speed
drifts over minutes weighs on each alike; a figure is the median of its rounds.

CPU over each measured window comes from /proc: utime + stime of every daemon,
of the stub, of this process and of every PostgreSQL process (this database's
backends apart from the rest of the cluster; a backend that exits is counted
through the postmaster's reaped-children time), the wrk runs from this
process's reaped-children time, and the machine's busy time from /proc/stat.
What the machine spent beyond those is other work, which this machine may
run at the same time: before each window the run waits, up to a limit, until
the 1-minute load average is at most a threshold and the machine, the round's
processes idle, is close to idle (the load average lags by a minute), and
records both; a round whose window still had more than a little other work is
run again, up to a limit, since such a window measures that work too.

A daemon whose CPU is busy holds its events back and sends them once the burst
is over, so the counters are read again when every event of the window has
been texted: req/s and CPU per pay counted to that point include the work the
window leaves out. During the window, this database's backends are looked at
in pg_stat_activity (running, waiting for the WAL flush, in a transaction
waiting for their daemon, idle in the pool), which says what a pay waits for.

After each round the ledger is checked: no bill is debited twice, every paid
bill is debited, no wallet is below zero, and every wallet's balance is its
seed plus its ledger entries.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import platform
import resource
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.cli import EXIT_MISSING_TOOL
from bench.config import PG_ADMIN_URL, RESULTS, BenchConfig
from bench.data import (
    BALANCE_MINOR,
    BenchDb,
    PostgresDb,
    create_postgres_database,
    drop_postgres_database,
)
from bench.procs import PYTHON, VOLTPAY, cpu_seconds, free_port
from bench.runner import Bench, Service, source_fingerprint, voltpay_env
from bench.stats import median, paired_ratios, ratio
from bench.wrk import WrkMissing, WrkResult, find_wrk, run_wrk

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
# What every daemon of a round shares, as one deployment shares it: one
# topic, one queue, one dead-letter queue, and the simulated provider's state
# in the database (daemons with a provider in memory each would give tokens
# that repeat).
SHARED_AWS_NAMES = {
    "VOLTPAY_AWS__TOPIC_NAME": "scaleout-events",
    "VOLTPAY_AWS__QUEUE_NAME": "scaleout-notifications",
    "VOLTPAY_AWS__DEAD_LETTER_QUEUE_NAME": "scaleout-notifications-dlq",
    "VOLTPAY_PROVIDER__STATE": "database",
}
LOAD_POLL_SECONDS = 5.0
IDLE_SAMPLE_SECONDS = 2.0
BACKEND_SAMPLE_SECONDS = 0.25
DRAIN_TIMEOUT_SECONDS = 180.0


def _say(message: str) -> None:
    print(f"[scaleout {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- /proc readings ----------------------------------------------------------


def split_connections(total: int, daemons: int) -> list[int]:
    """``total`` connections over ``daemons`` wrk runs, none more than one apart."""
    base, extra = divmod(total, daemons)
    return [base + (1 if index < extra else 0) for index in range(daemons)]


def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` shows them."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state is [0], ppid [1],
    utime [11], stime [12], reaped children's cutime [13] and cstime [14]."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def machine_ticks() -> tuple[int, int, int]:
    """The machine's CPU time so far in ticks: (all of it, the busy part, the
    part idle while a task waited for the disk); busy is all but idle and
    iowait."""
    _, *values = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    ticks = [int(value) for value in values[:8]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), sum(ticks) - ticks[3] - ticks[4], ticks[4]


def _cores_between(before: tuple[int, int, int], after: tuple[int, int, int], part: int) -> float:
    """Cores the machine spent in one part of ``machine_ticks`` between two readings."""
    all_ticks = after[0] - before[0]
    return CORES * (after[part] - before[part]) / all_ticks if all_ticks > 0 else 0.0


async def busy_cores(seconds: float) -> float:
    """Cores the machine keeps busy over the next ``seconds``."""
    before = machine_ticks()
    await asyncio.sleep(seconds)
    return _cores_between(before, machine_ticks(), 1)


def _usage_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def serves_database(pid: int, database: str) -> bool:
    """A backend's process title names its database
    ("postgres: 15/main: USER DATABASE HOST(PORT) STATE")."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return f" {database} ".encode() in title


@dataclass(frozen=True)
class ClusterCpu:
    """CPU seconds of one PostgreSQL cluster so far: each live process under
    the postmaster, and the total with the postmaster itself and every child it
    has reaped (a backend that exits takes its time into the postmaster's
    cutime, so the total loses nothing)."""

    processes: dict[int, float]
    total: float

    @classmethod
    def read(cls, postmaster: int) -> ClusterCpu:
        processes: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = _stat_fields(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile
            if int(fields[1]) == postmaster:
                processes[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        own = _stat_fields(postmaster)
        reaped = sum(int(value) for value in own[11:15]) / _CLOCK_TICKS
        return cls(processes, sum(processes.values()) + reaped)


@dataclass(frozen=True)
class Reading:
    """Every CPU counter a window is measured with, taken at one moment."""

    at: float
    daemons: tuple[float, ...]
    cluster: ClusterCpu | None
    endpoint: float
    reaped: float  # this process's reaped children: the wrk runs of the window
    bench: float
    machine: tuple[int, int, int]

    @classmethod
    def take(cls, daemons: Sequence[Service], endpoint: Service, postmaster: int | None) -> Reading:
        return cls(
            at=time.monotonic(),
            daemons=tuple(cpu_seconds(daemon.process.pid) for daemon in daemons),
            cluster=ClusterCpu.read(postmaster) if postmaster is not None else None,
            endpoint=cpu_seconds(endpoint.process.pid),
            reaped=_usage_seconds(resource.RUSAGE_CHILDREN),
            bench=_usage_seconds(resource.RUSAGE_SELF),
            machine=machine_ticks(),
        )


@dataclass(frozen=True)
class CpuShares:
    """Cores (CPU seconds per second of the window) that each part used."""

    daemons: tuple[float, ...]
    postgres: float | None  # this database's backends
    postgres_rest: float | None  # the cluster's other processes (WAL writer, other databases)
    load_generator: float  # wrk
    endpoint: float  # the SNS/SQS stub
    bench: float  # this process
    machine: float  # busy cores, machine-wide
    iowait: float  # idle cores while a task waited for the disk (PostgreSQL's WAL flushes)

    @property
    def daemons_total(self) -> float:
        return sum(self.daemons)

    @property
    def idle(self) -> float:
        """Cores idle with nothing waiting for the disk."""
        return max(0.0, CORES - self.machine - self.iowait)

    @property
    def other(self) -> float:
        """What the machine spent beyond the processes of the round."""
        accounted = (
            self.daemons_total
            + (self.postgres or 0.0)
            + (self.postgres_rest or 0.0)
            + self.load_generator
            + self.endpoint
            + self.bench
        )
        return max(0.0, self.machine - accounted)

    @classmethod
    def between(cls, before: Reading, after: Reading, database: str) -> CpuShares:
        seconds = max(after.at - before.at, 1e-9)
        postgres = postgres_rest = None
        if before.cluster is not None and after.cluster is not None:
            ours = sum(
                spent - before.cluster.processes.get(pid, 0.0)
                for pid, spent in after.cluster.processes.items()
                if serves_database(pid, database)
            )
            postgres = ours / seconds
            # Never below zero: a backend's time is read a moment apart from the total.
            rest = after.cluster.total - before.cluster.total - ours
            postgres_rest = max(0.0, rest) / seconds
        return cls(
            daemons=tuple(
                (a - b) / seconds for a, b in zip(after.daemons, before.daemons, strict=True)
            ),
            postgres=postgres,
            postgres_rest=postgres_rest,
            load_generator=(after.reaped - before.reaped) / seconds,
            endpoint=(after.endpoint - before.endpoint) / seconds,
            bench=(after.bench - before.bench) / seconds,
            machine=_cores_between(before.machine, after.machine, 1),
            iowait=_cores_between(before.machine, after.machine, 2),
        )


# -- PostgreSQL ----------------------------------------------------------------


def database_of(url: str) -> str:
    """The database a postgres:// URL names."""
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def postmaster_pid(backend: int) -> int | None:
    """The parent of a backend seen in /proc, when it is a postgres process
    (None for a server on another machine, whose pids mean nothing here)."""
    try:
        parent = int(_stat_fields(backend)[1])
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return parent if name == "postgres" else None


async def postmaster_of(url: str) -> tuple[int | None, str]:
    """The postmaster's pid when the server runs on this machine (else None),
    and the server's version."""
    conn = await asyncpg.connect(url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        version = str(await conn.fetchval("SHOW server_version"))
        return postmaster_pid(backend), version
    finally:
        await conn.close()


@dataclass(frozen=True)
class LedgerCheck:
    paid: int
    debited_twice: int  # bills with more than one debit
    paid_not_debited: int
    below_zero: int  # wallets
    off_ledger: int  # wallets whose balance is not their seed plus their entries

    @property
    def holds(self) -> bool:
        return not (
            self.debited_twice or self.paid_not_debited or self.below_zero or self.off_ledger
        )

    def describe(self) -> str:
        if self.holds:
            return "ok"
        return (
            f"FAILED: {self.debited_twice} debited twice, {self.paid_not_debited} paid "
            f"without a debit, {self.below_zero} wallets below zero, {self.off_ledger} "
            "balances off their ledger"
        )


_LEDGER_CHECK = """
SELECT
  (SELECT count(*) FROM bills WHERE status = 'paid'),
  (SELECT count(*) FROM (
      SELECT bill_id FROM ledger_entries WHERE kind = 'debit' AND bill_id IS NOT NULL
      GROUP BY bill_id HAVING count(*) > 1) AS twice),
  (SELECT count(*) FROM bills b WHERE b.status = 'paid' AND NOT EXISTS (
      SELECT 1 FROM ledger_entries e WHERE e.bill_id = b.id AND e.kind = 'debit')),
  (SELECT count(*) FROM wallets WHERE balance_minor < 0),
  (SELECT count(*) FROM wallets w LEFT JOIN (
      SELECT wallet_id, sum(amount_minor) AS moved FROM ledger_entries GROUP BY wallet_id
   ) e ON e.wallet_id = w.id
   WHERE w.balance_minor <> $1 + COALESCE(e.moved, 0))
"""


async def check_ledger(url: str) -> LedgerCheck:
    """The money rules the round must have kept: the bench seeds every wallet
    with ``BALANCE_MINOR`` and no entry, so each balance is that plus its
    ledger; entries are signed (debits negative)."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(_LEDGER_CHECK, BALANCE_MINOR)
    finally:
        await conn.close()
    return LedgerCheck(*(int(value) for value in row))


_BACKENDS = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
"""
RUNNING = "running"
WAITING_FOR_DAEMON = "in a transaction, waiting for its daemon"
IN_POOL = "idle in the pool"
WAL_FLUSH = "waiting for the WAL flush"
LOCK = "waiting for a lock"
OTHER = "other"
ACTIVITIES = (RUNNING, WAITING_FOR_DAEMON, IN_POOL, WAL_FLUSH, LOCK, OTHER)


def backend_activity(state: str | None, wait_type: str | None, wait_event: str | None) -> str:
    """What a client backend is doing, from its pg_stat_activity row.

    "running" is active with no wait event: on a CPU or waiting for one, which
    PostgreSQL cannot tell apart. "idle in transaction" is a transaction open
    between two statements: the backend waits for its daemon to send the next
    one. "idle" is a pooled connection with no transaction. A commit waits for
    its WAL flush (IO WALSync/WALWrite) or for another backend's flush to end
    (LWLock WALWrite)."""
    if state == "idle":
        return IN_POOL
    if state == "idle in transaction":
        return WAITING_FOR_DAEMON
    if state != "active":
        return OTHER
    if wait_type is None:
        return RUNNING
    if wait_event in ("WALSync", "WALWrite"):
        return WAL_FLUSH
    if wait_type == "Lock":
        return LOCK
    return OTHER


@dataclass(frozen=True)
class BackendActivity:
    """What this database's client backends did over a window: ``samples``
    looks at pg_stat_activity, ``seen`` counts backends by activity."""

    samples: int = 0
    seen: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def __add__(self, other: BackendActivity) -> BackendActivity:
        return BackendActivity(self.samples + other.samples, self.seen + other.seen)

    @property
    def connections(self) -> float:
        """Backends open, on average."""
        return sum(self.seen.values()) / self.samples if self.samples else 0.0

    def share(self, activity: str) -> float:
        total = sum(self.seen.values())
        return self.seen[activity] / total if total else 0.0

    def share_in_use(self, activity: str) -> float:
        """The share of the time connections were in use (not idle in the pool)."""
        in_use = sum(self.seen.values()) - self.seen[IN_POOL]
        return self.seen[activity] / in_use if in_use else 0.0


async def sample_backends(url: str, stop: asyncio.Event) -> BackendActivity:
    """Look at this database's backends every ``BACKEND_SAMPLE_SECONDS`` until ``stop``."""
    samples = 0
    seen: collections.Counter[str] = collections.Counter()
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            for row in await conn.fetch(_BACKENDS):
                seen[backend_activity(*row)] += 1
            samples += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BACKEND_SAMPLE_SECONDS)
    finally:
        await conn.close()
    return BackendActivity(samples, seen)


# -- a round -------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one run measures, beside the bench's own knobs (``BenchConfig``)."""

    daemons: tuple[int, ...] = (1, 2, 3)
    rounds: int = 3
    connections: int = 64  # in total, split over the daemons
    max_load: float = 1.0  # the 1-minute load average a window may start at
    max_wait: float = 180.0  # seconds to wait for it before measuring anyway
    # Cores of other work a window may share the machine with (busy before it
    # starts, with the round's processes idle; unaccounted during it); a round
    # with more is run again, up to ``attempts`` times in all.
    max_other: float = 0.25
    attempts: int = 3


@dataclass(frozen=True)
class Discarded:
    """An attempt at a round run again because other work shared its window."""

    other: float
    rps: float
    ledger: LedgerCheck


@dataclass(frozen=True)
class Window:
    """One measured window: the wrk runs, the readings it began with, the
    cores used over it, and what PostgreSQL's backends were doing."""

    runs: list[WrkResult]
    before: Reading
    cpu: CpuShares
    activity: BackendActivity


@dataclass(frozen=True)
class RoundResult:
    number: int
    cycle: int
    daemons: int
    connections: tuple[int, ...]
    load_seen: tuple[float, float, float]  # when the window was due
    load_at_start: tuple[float, float, float]  # when it began, after any wait
    waited_s: float
    busy_at_start: float  # cores busy just before the window, the round's processes idle
    runs: tuple[WrkResult, ...]
    cpu: CpuShares
    caught_up_s: float | None  # after the window, until every event was texted
    # From the window's start until every event was texted: seconds, and cores
    # (the work a daemon holds back under load, its events' delivery, included).
    delivered_s: float
    delivered: CpuShares
    activity: BackendActivity
    ledger: LedgerCheck
    attempts: int = 1
    discarded: tuple[Discarded, ...] = ()

    @property
    def ledgers(self) -> list[LedgerCheck]:
        """This round's check and those of the attempts run again."""
        return [self.ledger, *(d.ledger for d in self.discarded)]

    @property
    def rps(self) -> float:
        return sum(run.rps for run in self.runs)

    @property
    def requests(self) -> int:
        return sum(run.requests for run in self.runs)

    @property
    def delivered_rps(self) -> float:
        """Payments a second, counting the time until their SMS were all sent."""
        return self.requests / self.delivered_s if self.delivered_s > 0 else 0.0

    @property
    def p99_ms(self) -> float:
        return max(run.p99_ms for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def wrapped(self) -> int:
        return sum(run.wrapped for run in self.runs)

    @property
    def steal(self) -> float | None:
        shares = [run.steal for run in self.runs if run.steal is not None]
        return max(shares) if shares else None


class ScaleOut(Bench):
    """The bench's processes, data and wrk runs, arranged as N daemons on one
    database; ``Bench`` supplies how each is started, seeded and measured."""

    def __init__(self, config: BenchConfig, plan: Plan) -> None:
        super().__init__(config)
        self.plan = plan
        self.rounds: list[RoundResult] = []
        self.postgres_version = ""

    async def measure(self) -> list[RoundResult]:
        find_wrk()
        try:
            for cycle in range(self.plan.rounds):
                for count in self.plan.daemons:
                    result = await self._undisturbed_round(cycle, count)
                    self.rounds.append(result)
                    _say(_round_line(result))
        finally:
            if not self.config.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.results.finished_at = time.time()
        self.results.source_at_end = source_fingerprint()
        return self.rounds

    async def _undisturbed_round(self, cycle: int, count: int) -> RoundResult:
        """A round whose window other work left alone, within the plan's
        attempts: a window shared with other work measures that work too. When
        every attempt is disturbed, the least disturbed one counts."""
        tries: list[RoundResult] = []
        while len(tries) < self.plan.attempts:
            result = await self._round(cycle, count, len(tries) + 1)
            tries.append(result)
            if result.cpu.other <= self.plan.max_other:
                break
            _say(
                f"round {result.number}: other work took {result.cpu.other:.2f} of a core "
                "during the window; "
                + (
                    "running it again"
                    if len(tries) < self.plan.attempts
                    else "keeping the least disturbed attempt"
                )
            )
        kept = min(tries, key=lambda r: r.cpu.other)
        discarded = tuple(Discarded(r.cpu.other, r.rps, r.ledger) for r in tries if r is not kept)
        return dataclasses.replace(kept, attempts=len(tries), discarded=discarded)

    async def _round(self, cycle: int, count: int, attempt: int) -> RoundResult:
        config = self.config
        number = len(self.rounds) + 1
        label = f"{number}.{attempt}"
        name = f"voltpay_scaleout_{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:8]}"
        _say(f"round {number} (attempt {attempt}): {_daemons(count)}, database {name}")
        url = await create_postgres_database(config.pg_admin_url, name)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(drop_postgres_database, config.pg_admin_url, name)
            stub = await self._start(
                f"stub-aws-{label}",
                [PYTHON, "-m", "bench.stub_aws", "--port", "{port}"],
                "/healthz",
            )
            stack.push_async_callback(stub.stop)
            await self._migrate(url)
            db = await PostgresDb.connect(url)
            stack.push_async_callback(db.close)
            await db.seed_users(config.users)
            daemons = await self._start_daemons(stack, label, count, url, stub.url)
            for daemon in daemons:
                await self._sanity_check(daemon, db)
            await self._quiet_all(daemons, db)
            load_seen, waited, busy = await self._calm_machine()
            load_at_start = load_average()
            postmaster, self.postgres_version = await postmaster_of(url)
            window = await self._load(daemons, stub, db, url, postmaster)
            caught_up = await self._caught_up(db)
            delivered = Reading.take(daemons, stub, postmaster)
            # Now, while this database's backends are there to be recognised.
            delivered_cpu = CpuShares.between(window.before, delivered, name)
            await db.expire_pending()
            await self._quiet_all(daemons, db)
            ledger = await check_ledger(url)
        return RoundResult(
            number,
            cycle,
            count,
            tuple(split_connections(self.plan.connections, count)),
            load_seen,
            load_at_start,
            waited,
            busy,
            tuple(window.runs),
            window.cpu,
            caught_up,
            delivered.at - window.before.at,
            delivered_cpu,
            window.activity,
            ledger,
        )

    async def _start_daemons(
        self,
        stack: contextlib.AsyncExitStack,
        label: str,
        count: int,
        database_url: str,
        endpoint: str,
    ) -> list[Service]:
        """``count`` daemons with one set of settings, one after another (see
        the module's docstring); each is stopped when ``stack`` closes."""
        daemons: list[Service] = []
        for index in range(count):
            port = free_port()
            daemon = await self._start(
                f"voltpay-{label}-{index + 1}",
                [VOLTPAY, "run"],
                "/readyz",
                env={**voltpay_env(port, database_url, endpoint), **SHARED_AWS_NAMES},
                port=port,
            )
            stack.push_async_callback(daemon.stop)
            daemons.append(daemon)
        return daemons

    async def _quiet_all(self, daemons: Sequence[Service], db: BenchDb) -> None:
        """Every event delivered and every daemon idle."""
        for daemon in daemons:
            await self._quiet(daemon, db)()

    async def _calm_machine(self) -> tuple[tuple[float, float, float], float, float]:
        """The load average when the window is due; how long it then took
        until the 1-minute load was at most the plan's threshold and the
        machine, with the round's processes idle, kept at most ``max_other``
        cores busy (or the longest wait allowed); the cores busy at the end.
        The load average lags by a minute; the busy sample sees work now."""
        seen = load_average()
        began = time.monotonic()
        announced = False
        while True:
            busy = await busy_cores(IDLE_SAMPLE_SECONDS)
            calm = load_average()[0] <= self.plan.max_load and busy <= self.plan.max_other
            if calm or time.monotonic() - began >= self.plan.max_wait:
                return seen, time.monotonic() - began, busy
            if not announced:
                _say(
                    f"load average {load_average()[0]:.2f}, {busy:.2f} cores busy: waiting "
                    f"for at most {self.plan.max_load:.1f} and {self.plan.max_other:.2f}"
                )
                announced = True
            await asyncio.sleep(LOAD_POLL_SECONDS)

    async def _load(
        self,
        daemons: Sequence[Service],
        stub: Service,
        db: BenchDb,
        url: str,
        postmaster: int | None,
    ) -> Window:
        """The bench's pay workload through every daemon at once: a warm-up,
        then the measured window, with the CPU counters read around it and
        PostgreSQL's backends looked at during it."""
        config = self.config
        connections = split_connections(self.plan.connections, len(daemons))
        keys = [("voltpay", "pay", f"postgres-{len(daemons)}-daemons", c) for c in connections]
        if config.warmup:
            warm = [await self._pay_file(db, self._bills_for(k, config.warmup)) for k in keys]
            await self._wrk_each(daemons, connections, config.warmup, warm)
        data = [await self._pay_file(db, self._bills_for(k, config.duration)) for k in keys]
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_backends(url, stop))
        try:
            before = Reading.take(daemons, stub, postmaster)
            runs = await self._wrk_each(daemons, connections, config.duration, data)
            after = Reading.take(daemons, stub, postmaster)
        finally:
            stop.set()
            activity = await sampler
        for key, run in zip(keys, runs, strict=True):
            self._learn(key, run)
        return Window(runs, before, CpuShares.between(before, after, database_of(url)), activity)

    async def _wrk_each(
        self,
        daemons: Sequence[Service],
        connections: Sequence[int],
        seconds: int,
        data: Sequence[Path],
    ) -> list[WrkResult]:
        runs = [
            run_wrk(
                daemon.url,
                connections=conns,
                duration=seconds,
                threads=self.config.wrk_threads,
                mode="pay",
                data_file=path,
            )
            for daemon, conns, path in zip(daemons, connections, data, strict=True)
        ]
        return list(await asyncio.gather(*runs))

    async def _caught_up(self, db: BenchDb) -> float | None:
        began = time.monotonic()
        if await db.wait_drained(timeout=DRAIN_TIMEOUT_SECONDS):
            return time.monotonic() - began
        _say(f"warning: {await db.events_waiting()} events still waiting for their SMS")
        return None


# -- figures -------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """The medians of one configuration's rounds."""

    daemons: int
    rounds: tuple[RoundResult, ...]

    def median_of(self, figure: Callable[[RoundResult], float | None]) -> float | None:
        return median(value for r in self.rounds if (value := figure(r)) is not None)

    @property
    def rps(self) -> float | None:
        return self.median_of(lambda r: r.rps)

    @property
    def p99_ms(self) -> float | None:
        return self.median_of(lambda r: r.p99_ms)

    def cpu(self, part: Callable[[CpuShares], float | None]) -> float | None:
        return self.median_of(lambda r: part(r.cpu))

    def daemon_cpu(self, index: int) -> float | None:
        """The cores the daemon started ``index``-th used."""
        return self.median_of(lambda r: r.cpu.daemons[index])

    def ms_per_pay(self, part: Callable[[CpuShares], float | None]) -> float | None:
        """CPU milliseconds per pay request over the window, from each round's
        own rate."""

        def per_pay(r: RoundResult) -> float | None:
            used = part(r.cpu)
            return None if used is None or r.rps <= 0 else 1000 * used / r.rps

        return self.median_of(per_pay)

    def ms_per_pay_delivered(self, part: Callable[[CpuShares], float | None]) -> float | None:
        """CPU milliseconds per pay request from the window's start until its
        SMS were all sent: what a pay costs in the end, whether its daemon
        delivered the event during the window or held it back until after."""

        def per_pay(r: RoundResult) -> float | None:
            used = part(r.delivered)
            if used is None or r.requests <= 0:
                return None
            return 1000 * used * r.delivered_s / r.requests

        return self.median_of(per_pay)

    @property
    def delivered_rps(self) -> float | None:
        return self.median_of(lambda r: r.delivered_rps)

    @property
    def ms_per_request(self) -> float | None:
        """How long a pay took: wrk keeps one request on each connection, so by
        Little's law the mean time is connections over req/s."""
        return self.median_of(lambda r: 1000 * sum(r.connections) / r.rps if r.rps else None)

    @property
    def ms_in_postgres(self) -> float | None:
        """How long of it a PostgreSQL connection was in use for the pay:
        connections in use over req/s (Little's law again)."""

        def in_use(r: RoundResult) -> float | None:
            busy = r.activity.connections * (1 - r.activity.share(IN_POOL))
            return 1000 * busy / r.rps if r.rps else None

        return self.median_of(in_use)

    @property
    def activity(self) -> BackendActivity:
        """What this database's backends did, over every round pooled."""
        return sum((r.activity for r in self.rounds), BackendActivity())


def configurations(rounds: Sequence[RoundResult]) -> list[Configuration]:
    counts = sorted({r.daemons for r in rounds})
    return [Configuration(n, tuple(r for r in rounds if r.daemons == n)) for n in counts]


def cycle_ratios(config: Configuration, base: Configuration) -> list[float]:
    """req/s against the base configuration's round of the same cycle (run
    minutes apart, not hours)."""
    return paired_ratios(
        {r.cycle: r.rps for r in config.rounds}, {r.cycle: r.rps for r in base.rounds}
    )


def _daemons(count: int) -> str:
    return f"{count} daemon" if count == 1 else f"{count} daemons"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _load_text(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in load)


def _round_line(r: RoundResult) -> str:
    each = ", ".join(f"{run.rps:.0f}" for run in r.runs)
    return (
        f"round {r.number}: {_daemons(r.daemons)} {r.rps:8.1f} req/s ({each})  "
        f"p99 {r.p99_ms:7.2f} ms  busy {r.cpu.machine:.2f} of {CORES} cores "
        f"(daemons {r.cpu.daemons_total:.2f}, PostgreSQL {_fmt(r.cpu.postgres, 2)}, "
        f"wrk {r.cpu.load_generator:.2f}, other {r.cpu.other:.2f}; iowait "
        f"{r.cpu.iowait:.2f})  load before "
        f"{r.load_seen[0]:.2f}, at start {r.load_at_start[0]:.2f} ({r.busy_at_start:.2f} cores "
        f"busy)  ledger {r.ledger.describe()}"
        + (f"  ({r.errors} errors)" if r.errors else "")
        + (f"  (ran out of bills {r.wrapped} times)" if r.wrapped else "")
    )


def throughput_table(configs: Sequence[Configuration]) -> list[str]:
    base = configs[0]
    lines = [
        "| daemons | connections each | rounds | pay req/s | by round "
        f"| vs {_daemons(base.daemons)} | by cycle | p99 ms (worst wrk) | by round "
        f"| req/s to SMS sent | vs {_daemons(base.daemons)} | errors |",
        "|---:|---|---:|---:|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for c in configs:
        conns = "+".join(str(n) for n in c.rounds[0].connections)
        lines.append(
            f"| {c.daemons} | {conns} | {len(c.rounds)} | {_fmt(c.rps)} "
            f"| {', '.join(f'{r.rps:,.0f}' for r in c.rounds)} | {_fmt(ratio(c.rps, base.rps), 2)} "
            f"| {', '.join(f'{x:.2f}' for x in cycle_ratios(c, base))} | {_fmt(c.p99_ms)} "
            f"| {', '.join(f'{r.p99_ms:.0f}' for r in c.rounds)} | {_fmt(c.delivered_rps)} "
            f"| {_fmt(ratio(c.delivered_rps, base.delivered_rps), 2)} "
            f"| {sum(r.errors for r in c.rounds)} |"
        )
    return lines


def cpu_table(configs: Sequence[Configuration]) -> list[str]:
    lines = [
        "| daemons | each daemon | all daemons | PostgreSQL (this database) | PostgreSQL (rest) "
        "| wrk | stub | machine busy | other work | idle, waiting for the disk | idle, no wait "
        "| daemon ms/pay | PostgreSQL ms/pay | daemon ms/pay to SMS sent "
        "| PostgreSQL ms/pay to SMS sent |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        each = " / ".join(_fmt(c.daemon_cpu(index), 2) for index in range(c.daemons))
        lines.append(
            f"| {c.daemons} | {each} | {_fmt(c.cpu(lambda s: s.daemons_total), 2)} "
            f"| {_fmt(c.cpu(lambda s: s.postgres), 2)} "
            f"| {_fmt(c.cpu(lambda s: s.postgres_rest), 2)} "
            f"| {_fmt(c.cpu(lambda s: s.load_generator), 2)} "
            f"| {_fmt(c.cpu(lambda s: s.endpoint), 2)} | {_fmt(c.cpu(lambda s: s.machine), 2)} "
            f"| {_fmt(c.cpu(lambda s: s.other), 2)} | {_fmt(c.cpu(lambda s: s.iowait), 2)} "
            f"| {_fmt(c.cpu(lambda s: s.idle), 2)} "
            f"| {_fmt(c.ms_per_pay(lambda s: s.daemons_total), 2)} "
            f"| {_fmt(c.ms_per_pay(lambda s: s.postgres), 2)} "
            f"| {_fmt(c.ms_per_pay_delivered(lambda s: s.daemons_total), 2)} "
            f"| {_fmt(c.ms_per_pay_delivered(lambda s: s.postgres), 2)} |"
        )
    return lines


def activity_table(configs: Sequence[Configuration]) -> list[str]:
    lines = [
        "| daemons | connections open | " + " | ".join(ACTIVITIES) + " |",
        "|---:|---:|" + "---:|" * len(ACTIVITIES),
    ]
    for c in configs:
        activity = c.activity
        shares = " | ".join(f"{100 * activity.share(a):.0f}%" for a in ACTIVITIES)
        lines.append(f"| {c.daemons} | {activity.connections:.1f} | {shares} |")
    return lines


def rounds_table(rounds: Sequence[RoundResult]) -> list[str]:
    lines = [
        "| round | daemons | load before (1/5/15 min) | waited s | load at start "
        "| cores busy at start | attempts (other work, req/s of those run again) "
        "| req/s by daemon | req/s | p99 ms | machine busy | other work | iowait | steal "
        "| SMS caught up s | bills paid | ledger |",
        "|---:|---:|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rounds:
        steal = "-" if r.steal is None else f"{100 * r.steal:.1f}%"
        again = "".join(f"; {d.other:.2f} cores, {d.rps:,.0f}" for d in r.discarded)
        lines.append(
            f"| {r.number} | {r.daemons} | {_load_text(r.load_seen)} | {r.waited_s:.0f} "
            f"| {r.load_at_start[0]:.2f} | {r.busy_at_start:.2f} | {r.attempts}{again} "
            f"| {', '.join(f'{run.rps:,.0f}' for run in r.runs)} "
            f"| {r.rps:,.1f} | {r.p99_ms:.1f} | {r.cpu.machine:.2f} | {r.cpu.other:.2f} "
            f"| {r.cpu.iowait:.2f} "
            f"| {steal} | {_fmt(r.caught_up_s)} | {r.ledger.paid:,} | {r.ledger.describe()} |"
        )
    return lines


def _quietness(rounds: Sequence[RoundResult], plan: Plan) -> str:
    seen = [r.load_seen[0] for r in rounds]
    start = [r.load_at_start[0] for r in rounds]
    loud = [
        r.number
        for r in rounds
        if r.load_at_start[0] > plan.max_load or r.busy_at_start > plan.max_other
    ]
    # The first look at the machine takes one idle sample; only more is waiting.
    waited = [r for r in rounds if r.waited_s > IDLE_SAMPLE_SECONDS + 1]
    again = [r for r in rounds if r.discarded]
    other = [r.cpu.other for r in rounds]
    steal = max((r.steal or 0.0) for r in rounds)
    text = (
        f"How quiet the machine was: the 1-minute load average was {min(seen):.2f} to "
        f"{max(seen):.2f} when a window was due (the round's own set-up counts in it) and "
        f"{min(start):.2f} to {max(start):.2f} when it began, with "
        f"{min(r.busy_at_start for r in rounds):.2f} to "
        f"{max(r.busy_at_start for r in rounds):.2f} cores busy just before it (the round's "
        f"processes idle); {len(waited)} of {len(rounds)} rounds waited for the load to fall "
        f"to {plan.max_load:.1f} and the machine to go quiet (at most "
        f"{max(r.waited_s for r in rounds):.0f} s). During the windows kept, work outside the "
        f"round's own processes took {min(other):.2f} to {max(other):.2f} of a core (median "
        f"{median(other) or 0.0:.2f}) and the hypervisor stole at most {100 * steal:.1f}% of "
        "the CPU time."
    )
    if again:
        text += (
            f" {sum(len(r.discarded) for r in again)} attempt(s), in round(s) "
            f"{', '.join(str(r.number) for r in again)}, had more than "
            f"{plan.max_other:.2f} of a core of other work in the window and were run again "
            "(the rounds table shows what they measured)."
        )
    if loud:
        text += (
            f" Round(s) {', '.join(map(str, loud))} began before the machine was quiet (the "
            "wait ran out); they were measured anyway."
        )
    return text


def _cores(c: Configuration, part: Callable[[CpuShares], float | None]) -> str:
    return _fmt(c.cpu(part), 2)


def _connections_text(c: Configuration) -> str:
    activity = c.activity
    in_use = ", ".join(
        f"{100 * activity.share_in_use(a):.0f}% {a}"
        for a in (RUNNING, WAL_FLUSH, WAITING_FOR_DAEMON, LOCK, OTHER)
        if activity.share_in_use(a) >= 0.005
    )
    return (
        f"A pay took about {_fmt(c.ms_per_request, 0)} ms, of which a PostgreSQL connection "
        f"was in use for about {_fmt(c.ms_in_postgres, 1)} ms ({in_use}); the "
        f"{activity.connections:.0f} pooled connections sat idle "
        f"{100 * activity.share(IN_POOL):.0f}% of the time."
    )


def _busy(c: Configuration) -> float:
    return c.cpu(lambda s: s.machine) or 0.0


def _saturated(c: Configuration) -> bool:
    return _busy(c) >= 0.9 * CORES


def _in_short(configs: Sequence[Configuration]) -> str:
    one, rest = configs[0], configs[1:]
    window = ", ".join(f"{_fmt(c.rps, 0)}" for c in configs)
    delivered = ", ".join(f"{_fmt(c.delivered_rps, 0)}" for c in configs)
    counts = ", ".join(str(c.daemons) for c in configs)
    text = (
        f"In short: with {counts} daemons, pay reached {window} req/s over the window and "
        f"{delivered} counting until every SMS was sent (the medians)."
    )
    gains = [ratio(c.delivered_rps, one.delivered_rps) or 0.0 for c in rest]
    if rest and all(_saturated(c) for c in rest) and max(gains) < 1.1:
        effect = "lowers throughput" if max(gains) < 0.95 else "adds no throughput"
        text += (
            f" The {CORES} cores bound it: they are busy with {_daemons(rest[0].daemons)} "
            f"already, and a daemon added to them {effect}."
        )
    return text


def _one_daemon_waits(one: Configuration) -> str:
    """Why one daemon leaves cores idle, from where its pays spent their time."""
    text = (
        f" One daemon does not fill this machine: {_cores(one, lambda s: s.idle)} of a core "
        f"stayed idle while the daemon used {_cores(one, _daemons_cpu)} of the one core its "
        "event loop can use."
    )
    total, in_postgres = one.ms_per_request, one.ms_in_postgres
    if total and in_postgres is not None and in_postgres < 0.25 * total:
        text += (
            f" Nor is PostgreSQL what a pay waits for ({in_postgres:.1f} of its {total:.0f} "
            "ms): a pay spends the rest inside the daemon, so what holds one daemon back is "
            "how the daemon itself gets through its work, not the cores or the database."
        )
    return text


def _bound(configs: Sequence[Configuration]) -> str:
    one, rest = configs[0], configs[1:]
    text = (
        f"What bounds it here. With {_daemons(one.daemons)} the machine was busy "
        f"{_busy(one):.2f} of its {CORES} cores during the window: the daemons "
        f"{_cores(one, _daemons_cpu)}, PostgreSQL {_cores(one, lambda s: s.postgres)} for this "
        f"database's backends and {_cores(one, lambda s: s.postgres_rest)} for the rest of "
        f"the cluster, wrk {_cores(one, lambda s: s.load_generator)}, the stub "
        f"{_cores(one, lambda s: s.endpoint)}, other work {_cores(one, lambda s: s.other)}; "
        f"{_cores(one, lambda s: s.idle)} idle and {_cores(one, lambda s: s.iowait)} idle "
        "while a task waited for the disk. " + _connections_text(one)
    )
    if not _saturated(one) and one.activity.share(IN_POOL) >= 0.5:
        text += _one_daemon_waits(one)
    for c in rest:
        text += (
            f" With {_daemons(c.daemons)} the machine was {_busy(c):.2f} busy "
            f"({_cores(c, lambda s: s.idle)} idle); each daemon got "
            f"{_cores(c, lambda s: s.daemons_total / len(s.daemons))} of a core "
            f"({_cores(c, _daemons_cpu)} together), PostgreSQL {_cores(c, lambda s: s.postgres)}"
            f", and pay reached {_fmt(c.rps, 0)} req/s ({_fmt(ratio(c.rps, one.rps), 2)} times "
            f"{_daemons(one.daemons)}), {_fmt(c.delivered_rps, 0)} counting until every SMS was "
            f"sent ({_fmt(ratio(c.delivered_rps, one.delivered_rps), 2)} times). "
            + _connections_text(c)
        )
    if rest and all(_saturated(c) for c in rest):
        costs = " -> ".join(_fmt(c.ms_per_pay_delivered(_daemons_cpu), 2) for c in configs)
        pg_costs = " -> ".join(
            _fmt(c.ms_per_pay_delivered(lambda s: s.postgres), 2) for c in configs
        )
        text += (
            " A second daemon puts the idle CPU to work, but a daemon brings an event loop, "
            "not a core: on busy cores more daemons divide the same two among more processes "
            "and more PostgreSQL connections, and a pay costs more (daemon CPU per pay, "
            f"delivery included: {costs} ms; PostgreSQL's: {pg_costs} ms)."
        )
    caught_up = [c.median_of(lambda r: r.caught_up_s) or 0.0 for c in configs]
    if rest and caught_up[0] > 2 * max(caught_up[1:]) and caught_up[0] >= 1:
        others = ", ".join(
            f"{_daemons(c.daemons)} {t:.1f} s" for c, t in zip(rest, caught_up[1:], strict=True)
        )
        text += (
            f" Over the window, {_daemons(one.daemons)} also puts work off: while its CPU is "
            "busy it holds its events back and texts them after the window (for "
            f"{caught_up[0]:.1f} s, median), where more daemons, each less busy, text them "
            "during it (for "
            f"{others} after it); so the window's req/s flatters one daemon, and the rate counted "
            "until every SMS was sent is the fairer comparison."
        )
    return text


def _daemons_cpu(shares: CpuShares) -> float:
    return shares.daemons_total


def _projection(configs: Sequence[Configuration]) -> str:
    one = configs[0]
    daemon_ms = one.ms_per_pay_delivered(_daemons_cpu)
    postgres_ms = one.ms_per_pay_delivered(lambda s: s.postgres)
    own_ms = one.ms_per_pay_delivered(lambda s: s.machine - s.other)
    if not daemon_ms or postgres_ms is None or not own_ms or one.delivered_rps is None:
        return ""
    full_core = 1000 / daemon_ms
    low = min(one.delivered_rps, full_core)
    beside = postgres_ms / daemon_ms
    return (
        f"On more cores. With {_daemons(one.daemons)} a pay costs {daemon_ms:.2f} ms of "
        f"daemon CPU and {postgres_ms:.2f} ms of PostgreSQL's, counted until its SMS was sent "
        f"(over the window alone {_fmt(one.ms_per_pay(_daemons_cpu), 2)} and "
        f"{_fmt(one.ms_per_pay(lambda s: s.postgres), 2)}). A daemon runs one event loop, so "
        f"it uses at most one core; here it used {_cores(one, _daemons_cpu)} with CPU to "
        f"spare. A daemon on cores of its own would so pay between about {low:,.0f} bills a "
        f"second, SMS included (as here), and {full_core:,.0f} (a full core at this CPU per "
        f"pay), with {beside:.2f} of a core of PostgreSQL beside it and the clients on "
        f"cores of their own. N daemons would reach about N times that on N x "
        f"{1 + beside:.2f} cores (three: {3 * low:,.0f} to {3 * full_core:,.0f} on "
        f"{3 * (1 + beside):.1f} cores), as far as a pay costs there what it costs one daemon "
        "here (two and three daemons paid more per pay on two busy cores) and PostgreSQL's "
        "commits, which wait for the WAL flush on one disk, do not bind first; this machine "
        f"cannot show where that is. On these {CORES} cores the round's own processes, at "
        f"{own_ms:.2f} ms of CPU per pay (load generator and stub included), fill the machine "
        f"at about {1000 * CORES / own_ms:,.0f} req/s when nothing else runs, however many "
        "daemons share it."
    )


def _spread(configs: Sequence[Configuration]) -> str:
    """How far the rounds of one configuration are apart, against the ratios."""
    one, rest = configs[0], configs[1:]

    def width(c: Configuration) -> float:
        return max(r.rps for r in c.rounds) / min(r.rps for r in c.rounds)

    widest = max(configs, key=width)
    costs = [1000 * r.cpu.daemons_total / r.rps for r in widest.rounds if r.rps]
    text = (
        f"The machine's speed moves from minute to minute: the rounds of "
        f"{_daemons(widest.daemons)} ranged from {min(r.rps for r in widest.rounds):,.0f} to "
        f"{max(r.rps for r in widest.rounds):,.0f} req/s, and their daemon CPU per pay from "
        f"{min(costs):.2f} to {max(costs):.2f} ms."
    )
    cycles = [
        f"{c.daemons}/{one.daemons}: {', '.join(f'{x:.2f}' for x in cycle_ratios(c, one))}"
        for c in rest
    ]
    if cycles:
        text += (
            f" So one cycle's ratio says little ({'; '.join(cycles)}); the medians over "
            f"{len(one.rounds)} rounds each are the figures."
        )
    return text


def _ledger_text(rounds: Sequence[RoundResult]) -> str:
    failed = [r.number for r in rounds if not all(c.holds for c in r.ledgers)]
    paid = sum(c.paid for r in rounds for c in r.ledgers)
    if failed:
        return (
            f"Ledger checks FAILED in round(s) {', '.join(map(str, failed))} (an attempt run "
            "again counts too): see the rounds table."
        )
    return (
        f"Ledger checks held after every round and every attempt run again ({paid:,} bills "
        "paid in all): no bill debited twice, none paid without a debit, no wallet below "
        "zero, every balance its seed plus its ledger entries."
    )


def markdown(bench: ScaleOut) -> str:
    config, plan, rounds = bench.config, bench.plan, bench.rounds
    configs = configurations(rounds)
    results = bench.results
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(results.started_at))
    minutes = (results.finished_at - results.started_at) / 60
    digest = results.source_at_start
    if results.source_at_end and results.source_at_end != digest:
        digest += f" (then {results.source_at_end}: voltpay's source changed during the run)"
    order = ", ".join(str(n) for n in plan.daemons)
    return "\n".join(
        [
            f"# voltpay scale-out: pay with {order} daemons on one PostgreSQL, {started}",
            "",
            f"- machine: {socket.gethostname()}, {CORES} CPUs, Python "
            f"{platform.python_version()}, PostgreSQL {bench.postgres_version or '?'} "
            "on the same machine",
            f"- voltpay source digest: {digest}",
            f"- run: {minutes:.1f} min; configurations in turns ({order}) x {plan.rounds}; "
            f"figures are medians over rounds",
            "- each round: a fresh PostgreSQL database (`voltpay migrate`), "
            f"{config.users} users with wallets and sessions, the bench's SNS/SQS stub in its "
            "own process, N `voltpay run` daemons with identical settings (the same topic, "
            "queue and dead-letter queue names; default pool of 20 PostgreSQL connections "
            "each; log level WARNING; SMS to the log), each on its own port",
            f"- load: POST /api/Vend/{{billId}}/pay, {plan.connections} connections in total "
            "split evenly, one wrk (1 thread) per daemon at the same time, "
            f"{config.duration} s after {config.warmup} s of warm-up, every request paying a "
            "pending bill of its own; a round's req/s is the sum over its wrk runs, its p99 the "
            "worst of theirs",
            f"- before each window: wait (up to {plan.max_wait:.0f} s) until the 1-minute load "
            f"average is at most {plan.max_load:.1f} and the machine, with the round's processes "
            f"idle, keeps at most {plan.max_other:.2f} cores busy; a round whose window had more "
            f"than {plan.max_other:.2f} cores of other work is run again (at most "
            f"{plan.attempts} attempts; the least disturbed counts)",
            "",
            "## Pay throughput",
            "",
            "req/s to SMS sent: the round's payments over the time from the window's start "
            "until every SMS was sent. A daemon whose CPU is busy holds its events back "
            "(`VOLTPAY_AGENTS__YIELD_IN_FLIGHT`) and sends them once the burst is over, so "
            "req/s over the window leaves that work out where it happens.",
            "",
            *throughput_table(configs),
            "",
            f"## CPU during the window (cores of {CORES}, medians)",
            "",
            "wrk from this process's reaped children; PostgreSQL (rest): the cluster's "
            "background processes and any other database; other work: the machine's busy "
            "time beyond every process listed.",
            "",
            *cpu_table(configs),
            "",
            "## PostgreSQL's connections during the window",
            "",
            "This database's client backends, looked at every "
            f"{BACKEND_SAMPLE_SECONDS:g} s in pg_stat_activity, every round of a configuration "
            "pooled: running is active with no wait (on a CPU or waiting for one); in a "
            "transaction, waiting for its daemon is idle in transaction (between two "
            "statements); idle in the pool is an open connection with no transaction.",
            "",
            *activity_table(configs),
            "",
            "## Rounds",
            "",
            *rounds_table(rounds),
            "",
            "## Reading",
            "",
            _in_short(configs),
            "",
            _bound(configs),
            "",
            _projection(configs),
            "",
            _spread(configs),
            "",
            _quietness(rounds, plan),
            "",
            _ledger_text(rounds),
            "",
        ]
    )


def summary_line(bench: ScaleOut, path: Path) -> str:
    configs = configurations(bench.rounds)
    base = configs[0]
    figures = "; ".join(
        f"{_daemons(c.daemons)} {_fmt(c.rps, 0)} req/s"
        + (f" ({_fmt(ratio(c.rps, base.rps), 2)}x)" if c is not base else "")
        + f" p99 {_fmt(c.p99_ms, 0)} ms, busy {_fmt(c.cpu(lambda s: s.machine), 2)}/{CORES} cores"
        for c in configs
    )
    holds = all(c.holds for r in bench.rounds for c in r.ledgers)
    ledger = "ledger ok" if holds else "LEDGER FAILED"
    return f"scaleout: pay at {bench.plan.connections} connections: {figures}; {ledger}; {path}"


def write(bench: ScaleOut) -> Path:
    folder = bench.config.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = (
        folder / f"{time.strftime('%Y-%m-%d', time.gmtime(bench.results.started_at))}-scaleout.md"
    )
    path.write_text(markdown(bench))
    return path


# -- the command line ------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaleout",
        description="Pay req/s with 1, 2 and 3 daemons on one PostgreSQL; write "
        "bench/results/<UTC date>-scaleout.md.",
    )
    parser.add_argument("--daemons", default="1,2,3", help="configurations (default 1,2,3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument(
        "--connections", type=int, default=64, help="connections in total (default 64)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds measured (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (default 2)")
    parser.add_argument("--users", type=int, default=2000, help="bench users (default 2000)")
    parser.add_argument(
        "--max-load",
        type=float,
        default=1.0,
        help="1-minute load average a window may start at (default 1.0)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=180.0,
        help="seconds to wait for that load before measuring anyway (default 180)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.25,
        help="cores of other work a window may share the machine with (default 0.25)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="attempts at a round whose window other work disturbed (default 3)",
    )
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and data files")
    return parser


def plan_and_config(args: argparse.Namespace) -> tuple[Plan, BenchConfig]:
    daemons = tuple(int(n) for n in args.daemons.split(",") if n.strip())
    if not daemons or min(daemons) < 1 or args.connections < max(daemons):
        raise SystemExit("--daemons: whole numbers >= 1, no more than --connections")
    if min(args.rounds, args.duration, args.attempts) < 1 or args.warmup < 0:
        raise SystemExit("--rounds, --duration and --attempts must be >= 1, --warmup >= 0")
    plan = Plan(
        daemons,
        args.rounds,
        args.connections,
        args.max_load,
        args.max_wait,
        args.max_other,
        args.attempts,
    )
    config = BenchConfig(
        duration=args.duration,
        warmup=args.warmup,
        connections=[args.connections],
        rounds=args.rounds,
        only=frozenset({"pay"}),
        databases=["postgres"],
        users=args.users,
        pg_admin_url=args.pg_admin_url,
        out_dir=args.out,
        keep_workdir=args.keep_workdir,
    )
    return plan, config


def main(argv: Sequence[str] | None = None) -> int:
    plan, config = plan_and_config(_parser().parse_args(argv))
    try:
        find_wrk()
    except WrkMissing as exc:
        print(f"scaleout: {exc}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    # A SIGTERM stops the run like Ctrl-C: its processes are stopped and its
    # database dropped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench = ScaleOut(config, plan)
    try:
        asyncio.run(bench.measure())
    except KeyboardInterrupt:
        print("scaleout: interrupted", file=sys.stderr)
        return 130
    path = write(bench)
    print(summary_line(bench, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
