"""The run: processes up, load through them in turns, numbers down.

Order of one run (each part only when selected with ``--only``):

1. the instant SNS/SQS stub and the framework ceiling start once;
2. for SQLite, then PostgreSQL (a fresh, uniquely named database, dropped at
   the end): ``voltpay migrate``, users/wallets/sessions written straight into
   the database, then
   a. voltpay on its default embedded SNS/SQS endpoint (moto's server in the
      daemon's process): N payments, then commit → SMS, in turns with the raw
      aioboto3 ceiling on an embedded endpoint of its own (first, so that no
      event left waiting by the parts below is published before these);
   b. voltpay (``voltpay run``) with its SNS/SQS endpoint on the stub, and the
      database ceiling on the same database: /healthz (first database only),
      pay, add-funds and verify through wrk, voltpay and its ceiling in turns
      (pay on PostgreSQL in turns with the FastAPI peer too);
      a quiet user's pays alone and beside another user's flood, in turns
      (``bench.fairness``); the daemon's own pipeline against the stub; on one database the pay rate
      while the pipeline drains a backlog, and RSS over a steady pay load;
3. voltpay's bridges and raw aioboto3 against the instant stub.

Before every measurement the bench waits until the pipeline has delivered
every event and the processes under test are idle, so one measurement does
not pay for the last one's work. In every pair run in turns, which side goes
first alternates from round to round (voltpay first in the first round); the
report takes each round's ratio from its back-to-back pair (``bench.report``).
Pay on PostgreSQL runs three sides, the peer, voltpay and the ceiling, in that
order and then reversed, so that voltpay runs next to each of the two it is
compared with in every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import voltpay
from bench import bus_memory
from bench.bus_memory import BusMemorySample
from bench.config import BenchConfig
from bench.data import (
    BenchDb,
    BenchUser,
    PostgresDb,
    SqliteDb,
    create_postgres_database,
    drop_postgres_database,
)
from bench.fairness import FLOODS, FairnessSample, quiet_user
from bench.procs import (
    PYTHON,
    VOLTPAY,
    Process,
    die_with_parent,
    free_port,
    marked_report,
    rss_kib,
)
from bench.profile import Recording, summarize
from bench.stats import in_turns, percentile
from bench.wrk import WrkResult, find_wrk, run_wrk

log = logging.getLogger("bench")
# First guesses of req/s, to size the pending bills of a run (each pay needs
# its own); later runs use what was measured.
_FIRST_GUESS = {"voltpay": 1500.0, "ceiling": 4000.0, "peer": 1000.0}


def source_fingerprint() -> str:
    """A digest of voltpay's source files: which code was measured."""
    root = Path(voltpay.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class HttpSample:
    part: str  # healthz, pay, add-funds, verify
    system: str  # voltpay, ceiling, or peer (pay on PostgreSQL)
    database: str  # sqlite, postgres, or "-" for /healthz
    connections: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    wrapped: int
    steal: float | None = None  # the share of the machine's CPU time stolen meanwhile
    # voltpay: seconds from the round's end until every event it committed
    # was texted (events the relay held back while requests waited for the CPU).
    caught_up_s: float | None = None


@dataclass
class PipelineSample:
    # voltpay-embedded, ceiling-embedded, voltpay-shallow, voltpay-deep (the
    # depth figure), voltpay-stub, bridges-stub, raw-stub
    kind: str
    database: str
    round: int
    events: int
    delivered: int
    seconds: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    # SNS/SQS calls per event, by operation (known against the bench's stub).
    calls_per_event: dict[str, float] | None = None


@dataclass
class DrainSample:
    state: str  # idle or draining
    round: int
    rps: float
    p99_ms: float
    backlog: int
    delivered_during: int
    waiting_after: int


@dataclass
class RssSample:
    database: str
    seconds: int
    connections: int
    start_kib: int
    end_kib: int
    rps: float
    trace: list[tuple[float, int]]


@dataclass
class Results:
    config: BenchConfig
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    http: list[HttpSample] = field(default_factory=list)
    pipeline: list[PipelineSample] = field(default_factory=list)
    drain: list[DrainSample] = field(default_factory=list)
    rss: list[RssSample] = field(default_factory=list)
    bus_memory: list[BusMemorySample] = field(default_factory=list)
    fairness: list[FairnessSample] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source_at_start: str = field(default_factory=source_fingerprint)
    source_at_end: str = ""

    def samples(self) -> dict[str, Any]:
        return {
            "http": [asdict(s) for s in self.http],
            "pipeline": [asdict(s) for s in self.pipeline],
            "drain": [asdict(s) for s in self.drain],
            "rss": [asdict(s) for s in self.rss],
            "bus_memory": [asdict(s) for s in self.bus_memory],
            "fairness": [asdict(s) for s in self.fairness],
        }


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def voltpay_env(port: int, database_url: str, aws_endpoint: str | None) -> dict[str, str]:
    """The settings of every voltpay process the bench starts."""
    env = {
        "VOLTPAY_HTTP__HOST": "127.0.0.1",
        "VOLTPAY_HTTP__PORT": str(port),
        "VOLTPAY_HTTP__SHUTDOWN_GRACE_SECONDS": "5",
        "VOLTPAY_DATABASE__URL": database_url,
        "VOLTPAY_LOG__LEVEL": "WARNING",
        "VOLTPAY_LOG__FORMAT": "text",
        "VOLTPAY_SYSTEMD__ENABLED": "false",
        # A real provider's bookkeeping is not voltpay's work, and the
        # ceilings do none: the simulation keeps its state in memory here.
        "VOLTPAY_PROVIDER__STATE": "memory",
    }
    if aws_endpoint:
        env["VOLTPAY_AWS__ENDPOINT_URL"] = aws_endpoint
    return env


class Service:
    """A process under test with its base URL."""

    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.process.stop()


@dataclass
class Stage:
    """voltpay on one database, and how to wait until it is idle."""

    database: str
    db: BenchDb
    voltpay: Service
    quiet: Callable[[], Awaitable[None]]


class Bench:
    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.results = Results(config)
        self.workdir = Path(tempfile.mkdtemp(prefix="voltpay-bench-"))
        self.stub: Service | None = None
        self.framework: Service | None = None
        self._fastest: dict[tuple[str, str, str, int], float] = {}  # req/s seen
        self._stub_pipeline_rate = 1000.0

    # -- processes ---------------------------------------------------------

    async def _start(
        self,
        name: str,
        argv: list[str],
        ready_path: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float = 90.0,
    ) -> Service:
        port = port or free_port()
        process = Process(
            name, [a.replace("{port}", str(port)) for a in argv], self.workdir / f"{name}.log"
        )
        if env:
            process.env = env
        await process.start()
        service = Service(process, port)
        try:
            await process.wait_http(service.url + ready_path, timeout=timeout)
        except BaseException:
            await process.stop(grace=5)
            raise
        return service

    async def _start_voltpay(
        self, label: str, database_url: str, aws: str | None, db: BenchDb
    ) -> Service:
        await db.watch_from_now()
        port = free_port()
        return await self._start(
            f"voltpay-{label}",
            [VOLTPAY, "run"],
            "/readyz",
            env=voltpay_env(port, database_url, aws),
            port=port,
        )

    async def _migrate(self, database_url: str) -> None:
        env = voltpay_env(0, database_url, None)
        process = Process("migrate", [VOLTPAY, "migrate"], self.workdir / "migrate.log", env)
        await process.start()
        assert process.process is not None
        if await process.process.wait() != 0:
            raise RuntimeError(f"voltpay migrate failed:\n{process.log_tail()}")

    # -- the run -----------------------------------------------------------

    async def run(self) -> Results:
        find_wrk()
        config = self.config
        try:
            self.stub = await self._start(
                "stub-aws", [PYTHON, "-m", "bench.stub_aws", "--port", "{port}"], "/healthz"
            )
            if config.wants("healthz"):
                self.framework = await self._start(
                    "ceiling-framework",
                    [PYTHON, "-m", "bench.ceilings.framework", "--port", "{port}"],
                    "/healthz",
                )
            for index, database in enumerate(config.databases):
                await self._database_phase(database, first=index == 0)
            if config.wants("bridges"):
                await self._bridges()
        finally:
            for service in (self.framework, self.stub):
                if service is not None:
                    await service.stop()
            if not config.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.results.finished_at = time.time()
        self.results.source_at_end = source_fingerprint()
        if self.results.source_at_end != self.results.source_at_start:
            self.results.notes.append(
                "voltpay's source changed while the bench ran: figures may mix two versions"
            )
        return self.results

    async def _database_phase(self, database: str, *, first: bool) -> None:
        config = self.config
        pg_name = f"voltpay_bench_{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:8]}"
        if database == "postgres":
            url = await create_postgres_database(config.pg_admin_url, pg_name)
        else:
            url = f"sqlite://{self.workdir / 'voltpay.sqlite3'}"
        _say(f"{database}: database {url}")
        db: BenchDb | None = None
        try:
            await self._migrate(url)
            if database == "postgres":
                db = await PostgresDb.connect(url)
            else:
                db = SqliteDb(self.workdir / "voltpay.sqlite3")
            await db.seed_users(config.users)
            _say(f"{database}: {config.users} users, wallets and sessions written")
            # The embedded pipeline first: the drain and RSS parts end with
            # events still waiting in the outbox, which a later daemon on the
            # embedded endpoint would have to publish before the measured ones.
            if config.wants("pipeline"):
                await self._embedded_pipeline_phase(database, db, url)
            if config.wants("bus-memory") and database == config.drain_database:
                await self._bus_memory(database, db, url)
            http_parts = {
                "healthz",
                "pay",
                "add-funds",
                "verify",
                "fairness",
                "pipeline",
                "drain",
                "rss",
            }
            if any(config.wants(p) for p in http_parts):
                await self._http_phase(database, db, url, first=first)
        finally:
            if db is not None:
                await db.close()
            if database == "postgres":
                await drop_postgres_database(config.pg_admin_url, pg_name)

    # -- HTTP --------------------------------------------------------------

    async def _http_phase(self, database: str, db: BenchDb, url: str, *, first: bool) -> None:
        config = self.config
        assert self.stub is not None
        aws = self.stub.url if config.http_aws == "stub" else None
        voltpay = await self._start_voltpay(f"{database}-http", url, aws, db)
        ceiling: Service | None = None
        try:
            await self._sanity_check(voltpay, db)
            stage = Stage(database, db, voltpay, self._quiet(voltpay, db))
            if first and config.wants("healthz") and self.framework is not None:
                await self._pairs(stage, "healthz", self.framework)
            if config.wants("pay"):
                ceiling = await self._start(
                    f"ceiling-database-{database}",
                    [PYTHON, "-m", "bench.ceilings.database", "--port", "{port}", "--url", url],
                    "/healthz",
                )
                await self._pay_pairs(stage, ceiling, url)
                if config.profile:
                    await stage.quiet()
                    await self._profile_pay(voltpay, database, db)
            for part in ("add-funds", "verify"):
                if config.wants(part):
                    await self._singles(stage, part)
            if config.wants("fairness"):
                await self._fairness(stage)
            if config.wants("pipeline"):
                await self._stub_pipeline(stage)
            if database == config.drain_database:
                if config.wants("drain"):
                    await self._drain(voltpay, database, db, stage.quiet)
                if config.wants("rss"):
                    await stage.quiet()
                    await self._rss(voltpay, database, db)
            await stage.quiet()  # leave nothing in flight behind
        finally:
            if ceiling is not None:
                await ceiling.stop()
            await voltpay.stop()

    async def _stub_pipeline(self, stage: Stage) -> None:
        config = self.config
        for number in range(config.pipeline_rounds):
            await stage.quiet()
            sample = await self._voltpay_pipeline(
                stage.voltpay,
                stage.db,
                "voltpay-stub",
                stage.database,
                number,
                config.stub_events // 5,
            )
            self._stub_pipeline_rate = sample.events_per_s or self._stub_pipeline_rate

    async def _pay_pairs(self, stage: Stage, ceiling: Service, url: str) -> None:
        """Pay: voltpay and its ceiling, and on PostgreSQL the FastAPI peer as
        a third side, which holds its pool's connections only meanwhile."""
        if stage.database != "postgres":
            await self._pairs(stage, "pay", ceiling)
            return
        peer = await self._start(
            "peer-fastapi",
            [PYTHON, "-m", "bench.ceilings.fastapi_peer", "--port", "{port}", "--url", url],
            "/healthz",
        )
        try:
            await self._pairs(stage, "pay", ceiling, peer)
        finally:
            await peer.stop()

    async def _pairs(
        self, stage: Stage, part: str, ceiling: Service, peer: Service | None = None
    ) -> None:
        """voltpay and its ceiling (and the peer, if any) in turns, every
        level, all rounds; the order is reversed from round to round
        (``in_turns``), and voltpay runs next to each of the others."""
        database = "-" if part == "healthz" else stage.database
        sides = [("voltpay", stage.voltpay), ("ceiling", ceiling)]
        if peer is not None:
            sides.insert(0, ("peer", peer))
        for connections in self.config.connections:
            for number in range(self.config.rounds_at(connections)):
                for system, service in in_turns(number, *sides):
                    await stage.quiet()
                    if part == "healthz":
                        result = await self._wrk_fixed(service.url + "/healthz", connections)
                    else:
                        result = await self._wrk_pay(
                            service, system, stage.database, stage.db, connections
                        )
                    self._record(part, system, database, connections, number, result)
                    if system == "voltpay" and part != "healthz":
                        await self._catch_up(stage.db)

    async def _singles(self, stage: Stage, part: str) -> None:
        """No ceiling to pair with: one round per level."""
        for connections in self.config.connections:
            await stage.quiet()
            result = await self._wrk_api(stage.voltpay, part, stage.db, connections)
            self._record(part, "voltpay", stage.database, connections, 0, result)
            await self._catch_up(stage.db)

    async def _fairness(self, stage: Stage) -> None:
        """The quiet user alone and beside another user's flood, in turns
        (which goes first alternating from round to round), for each flood."""
        config = self.config
        quiet, flooder = stage.db.users[0], stage.db.users[1]
        # The flooder's lists hold something: paid and pending bills, and
        # the ledger entries of the payments.
        history = await stage.db.add_bills(2 * config.fairness_history, users=[flooder])
        await self._fire_pays(stage.voltpay.url, history[: config.fairness_history])
        # The same line for each of up to 16 wrk threads (bench/lua/api.lua).
        lines = {
            "lists": [f"{flooder.token} {flooder.wallet_id}"] * 16,
            "verify": [flooder.token] * 16,
        }
        files = {flood: self._write_lines(f"flood-{flood}", lines[flood]) for flood in FLOODS}
        for flood in FLOODS:
            for number in range(config.rounds):
                for state in in_turns(number, "alone", "flooded"):
                    await stage.quiet()
                    await self._fairness_window(stage, quiet, flood, state, number, files[flood])
                await stage.db.expire_pending()  # the verifies' bills

    async def _fairness_window(
        self,
        stage: Stage,
        quiet: BenchUser,
        flood: str,
        state: str,
        number: int,
        data: Path,
    ) -> None:
        config = self.config
        ticks = int(config.fairness_rate * config.duration) + 1
        bills = [bill for _, bill in await stage.db.add_bills(ticks + 3, users=[quiet])]
        load: asyncio.Task[WrkResult] | None = None
        if state == "flooded":
            load = asyncio.create_task(
                run_wrk(
                    stage.voltpay.url,
                    connections=config.fairness_connections,
                    duration=config.warmup + config.duration + 1,
                    threads=config.wrk_threads,
                    mode=flood,
                    data_file=data,
                    statuses=True,
                )
            )
            await asyncio.sleep(config.warmup + 0.5)  # the flood under way
        try:
            run = await quiet_user(
                stage.voltpay.url,
                quiet.token,
                bills,
                seconds=config.duration,
                rate=config.fairness_rate,
            )
        finally:
            flooded = await load if load is not None else None
        sample = FairnessSample.of(stage.database, flood, state, number, run)
        if flooded is not None:
            sample.flood_requests = flooded.requests
            sample.flood_rps = flooded.rps
            sample.flood_too_many = flooded.too_many
        self.results.fairness.append(sample)
        extra = ""
        if flooded is not None:
            extra = (
                f"; flood {flooded.rps:7.1f} req/s, {flooded.too_many} of "
                f"{flooded.requests} answered 429"
            )
        if run.failures:
            extra += f"  ({run.failures} of the quiet user's requests failed)"
        _say(
            f"fairness  {flood:6} {stage.database:8} {state:7} round {number + 1}: quiet pay "
            f"p50 {sample.pay_p50_ms:7.2f} ms  p99 {sample.pay_p99_ms:7.2f} ms  "
            f"get p50 {sample.get_p50_ms:6.2f} ms{extra}"
        )
        await stage.db.expire_pending()

    async def _catch_up(self, db: BenchDb) -> None:
        """How long the round's events took to be texted after it ended."""
        began = time.monotonic()
        if await db.wait_drained(timeout=180):
            sample = self.results.http[-1]
            sample.caught_up_s = round(time.monotonic() - began, 2)
            if sample.caught_up_s >= 1:
                _say(f"          its events were all texted {sample.caught_up_s:.1f} s after it")

    def _quiet(self, voltpay: Service, db: BenchDb) -> Callable[[], Awaitable[None]]:
        async def wait() -> None:
            began = time.monotonic()
            if not await db.wait_drained(timeout=180):
                waiting = await db.events_waiting()
                _say(f"warning: {waiting} events still in the pipeline; measuring anyway")
            drained = time.monotonic() - began
            calm = await voltpay.process.wait_quiet()
            if drained + calm > 10:
                _say(f"(waited {drained:.1f} s for the pipeline, {calm:.1f} s for quiet)")

        return wait

    async def _sanity_check(self, voltpay: Service, db: BenchDb) -> None:
        """One request of each kind must work before anything is measured."""
        user = db.users[0]
        [(token, bill_id)] = await db.add_bills(1)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(base_url=voltpay.url) as session:
            async with session.get("/api/me", headers=headers) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"GET /api/me: {reply.status} {await reply.text()}")
            async with session.post(
                f"/api/wallets/{user.wallet_id}/add-funds",
                json={"amount": "1.00"},
                headers={"Authorization": f"Bearer {user.token}"},
            ) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"add-funds: {reply.status} {await reply.text()}")
            async with session.post(f"/api/Vend/{bill_id}/pay", headers=headers) as reply:
                body = await reply.json()
                if reply.status != 200 or body.get("status") != "paid":
                    raise RuntimeError(f"pay: {reply.status} {body}")

    def _record(
        self, part: str, system: str, database: str, connections: int, number: int, r: WrkResult
    ) -> None:
        sample = HttpSample(
            part,
            system,
            database,
            connections,
            number,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.requests,
            r.errors,
            r.wrapped,
            r.steal,
        )
        self.results.http.append(sample)
        flag = "" if r.steal is None else f"  steal {100 * r.steal:4.1f}%"
        if r.errors:
            flag += f"  ({r.errors} errors)"
        if r.wrapped:
            flag += "  (ran out of bills: raise the estimate)"
        _say(
            f"{part:9} {system:8} {database:8} c={connections:<3} round {number + 1}: "
            f"{r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms{flag}"
        )

    async def _wrk_fixed(self, url: str, connections: int) -> WrkResult:
        config = self.config
        if config.warmup:
            await run_wrk(
                url, connections=connections, duration=config.warmup, threads=config.wrk_threads
            )
        return await run_wrk(
            url, connections=connections, duration=config.duration, threads=config.wrk_threads
        )

    def _bills_for(self, key: tuple[str, str, str, int], seconds: int) -> int:
        """Enough pending bills that wrk does not run out (a bill paid twice
        answers 409, and is not the figure wanted): the fastest rate seen at
        this level so far, for twice the duration plus ten seconds, since
        these machines change speed by more than twice from one round to the
        next (250 then 690 req/s, seen on 2026-11-29); before any, a first
        guess or the fastest rate seen at a lower level, for twice the
        duration."""
        fastest = self._fastest.get(key)
        if fastest is not None:
            return int(fastest * (2 * seconds + 10)) + 500
        system, part, database, connections = key
        lower = [
            rate
            for (s, p, d, c), rate in self._fastest.items()
            if (s, p, d) == (system, part, database) and c < connections
        ]
        guess = max([_FIRST_GUESS.get(system, 2000.0), *lower])
        return int(guess * 2 * seconds) + 500

    def _learn(self, key: tuple[str, str, str, int], result: WrkResult) -> None:
        # A run that ran out of bills went faster than its figure says.
        rate = result.rps * (2.0 if result.wrapped else 1.0)
        self._fastest[key] = max(self._fastest.get(key, 0.0), rate, 50.0)

    def _write_lines(self, name: str, lines: list[str]) -> Path:
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:8]}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _pay_file(self, db: BenchDb, count: int) -> Path:
        pairs = await db.add_bills(count)
        return self._write_lines("bills", [f"{token} {bill}" for token, bill in pairs])

    async def _wrk_pay(
        self,
        service: Service,
        system: str,
        database: str,
        db: BenchDb,
        connections: int,
        duration: int | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ) -> WrkResult:
        config = self.config
        seconds = duration or config.duration
        key = (system, "pay", database, connections)
        if config.warmup:
            warm = await self._pay_file(db, self._bills_for(key, config.warmup))
            await run_wrk(
                service.url,
                connections=connections,
                duration=config.warmup,
                threads=config.wrk_threads,
                mode="pay",
                data_file=warm,
            )
        data = await self._pay_file(db, self._bills_for(key, seconds))
        if on_start is not None:
            await on_start()
        result = await run_wrk(
            service.url,
            connections=connections,
            duration=seconds,
            threads=config.wrk_threads,
            mode="pay",
            data_file=data,
        )
        self._learn(key, result)
        await db.expire_pending()
        return result

    async def _wrk_api(
        self, voltpay: Service, part: str, db: BenchDb, connections: int
    ) -> WrkResult:
        config = self.config
        users = list(db.users)
        if part == "add-funds":
            lines = [f"{u.token} {u.wallet_id}" for u in users]
        else:
            lines = [u.token for u in users]
        data = self._write_lines(part, lines)
        if config.warmup:
            await run_wrk(
                voltpay.url,
                connections=connections,
                duration=config.warmup,
                threads=config.wrk_threads,
                mode=part,
                data_file=data,
            )
        result = await run_wrk(
            voltpay.url,
            connections=connections,
            duration=config.duration,
            threads=config.wrk_threads,
            mode=part,
            data_file=data,
        )
        # Not errors for these two: rotating through the users again is intended.
        return WrkResult(
            result.requests,
            result.seconds,
            result.p50_ms,
            result.p90_ms,
            result.p99_ms,
            result.max_ms,
            result.errors,
            0,
        )

    # -- the event pipeline ------------------------------------------------

    async def _fire_pays(
        self, base_url: str, pairs: list[tuple[str, uuid.UUID]], concurrency: int = 16
    ) -> int:
        """Pay every bill (``concurrency`` at a time); how many were paid."""
        paid = 0
        queue: asyncio.Queue[tuple[str, uuid.UUID]] = asyncio.Queue()
        for pair in pairs:
            queue.put_nowait(pair)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(base_url=base_url, connector=connector) as session:

            async def worker() -> None:
                nonlocal paid
                while not queue.empty():
                    token, bill = queue.get_nowait()
                    async with session.post(
                        f"/api/Vend/{bill}/pay", headers={"Authorization": f"Bearer {token}"}
                    ) as reply:
                        await reply.read()
                        paid += reply.status == 200

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return paid

    async def _voltpay_pipeline(
        self,
        voltpay: Service,
        db: BenchDb,
        kind: str,
        database: str,
        number: int,
        events: int,
        timeout: float | None = None,
    ) -> PipelineSample:
        """The commit of N payments' events, then N SMS: commit (the outbox
        row's created_at) to SMS recorded (the notification's sent_at), per
        event and overall.

        The N payment_completed rows are committed in one transaction by the
        bench (as the bills agent writes them), so what is timed is the
        pipeline alone, not how fast payments can be made; one real payment
        right after wakes the relay as every commit does (its event counts too).
        """
        mark = await db.outbox_mark()
        calls_before = await self._stub_calls() if kind.endswith("-stub") else None
        await db.insert_backlog(events)
        paid = events + await self._fire_pays(voltpay.url, await db.add_bills(1), concurrency=1)
        limit = timeout if timeout is not None else 60 + events / 5
        deadline = time.monotonic() + limit
        rows = await db.pipeline_rows(mark)
        while time.monotonic() < deadline:
            rows = await db.pipeline_rows(mark)
            if len(rows) >= paid and all(r.sent_at is not None for r in rows):
                break
            await asyncio.sleep(0.2)
        sent = [r for r in rows if r.sent_at is not None]
        if len(sent) < paid:
            _say(f"warning: {kind}: only {len(sent)} of {paid} SMS after {limit:.0f} s")
        latencies = [((r.sent_at - r.created_at).total_seconds()) for r in sent if r.sent_at]
        if sent:
            first = min(r.created_at for r in rows)
            last = max(r.sent_at for r in sent if r.sent_at is not None)
            seconds = max((last - first).total_seconds(), 1e-9)
        else:
            seconds = limit
        sample = PipelineSample(
            kind,
            database,
            number,
            paid,
            len(sent),
            seconds,
            len(sent) / seconds,
            percentile(latencies, 0.5) * 1000,
            percentile(latencies, 0.99) * 1000,
        )
        if calls_before is not None and sent:
            calls_after = await self._stub_calls()
            sample.calls_per_event = {
                name: round((count - calls_before.get(name, 0)) / len(sent), 3)
                for name, count in sorted(calls_after.items())
                if count > calls_before.get(name, 0)
            }
        self.results.pipeline.append(sample)
        self._say_pipeline(sample)
        await db.expire_pending()
        return sample

    async def _stub_calls(self) -> dict[str, int]:
        assert self.stub is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.stub.url + "/_bench/stats") as reply,
        ):
            calls: dict[str, int] = (await reply.json(content_type=None))["calls"]
        return calls

    def _say_pipeline(self, s: PipelineSample) -> None:
        calls = ""
        if s.calls_per_event:
            calls = "; calls/event " + ", ".join(f"{k} {v}" for k, v in s.calls_per_event.items())
        _say(
            f"pipeline  {s.kind:16} {s.database:8} round {s.round + 1}: {s.delivered}/{s.events} "
            f"in {s.seconds:6.2f} s = {s.events_per_s:8.1f} events/s  "
            f"p50 {s.p50_ms:8.1f} ms  p99 {s.p99_ms:8.1f} ms{calls}"
        )

    async def _probe(
        self, kind: str, database: str, number: int, endpoint: str, mode: str, events: int
    ) -> PipelineSample:
        """One run of bench.ceilings.pipeline in its own process."""
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "bench.ceilings.pipeline",
            "--endpoint",
            endpoint,
            "--mode",
            mode,
            "--events",
            str(events),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        out, _ = await process.communicate()
        text = out.decode(errors="replace")
        raw = marked_report(text)
        if raw is None:
            raise RuntimeError(f"the pipeline probe gave no report:\n{text[-2000:]}")
        received = int(raw.get("received", 0))
        seconds = float(raw.get("seconds", 0.0)) or 1e-9
        sample = PipelineSample(
            kind,
            database,
            number,
            events,
            received,
            seconds,
            float(raw.get("events_per_s", 0.0)),
            float(raw.get("p50_ms", 0.0)),
            float(raw.get("p99_ms", 0.0)),
        )
        self.results.pipeline.append(sample)
        self._say_pipeline(sample)
        return sample

    async def _embedded_pipeline_phase(self, database: str, db: BenchDb, url: str) -> None:
        config = self.config
        voltpay = await self._start_voltpay(f"{database}-embedded", url, None, db)
        try:
            quiet = self._quiet(voltpay, db)
            events = config.pipeline_events

            async def daemon(number: int) -> None:
                await self._voltpay_pipeline(
                    voltpay, db, "voltpay-embedded", database, number, events
                )

            async def ceiling(number: int) -> None:
                await self._probe("ceiling-embedded", database, number, "embedded", "raw", events)

            for number in range(config.pipeline_rounds):
                for side in in_turns(number, daemon, ceiling):
                    await quiet()
                    await side(number)
            if database == config.drain_database:
                # Whether the depth of what waits slows the pipeline: the
                # same drain with few and with many events waiting at once.
                shallow, deep = config.depth_events
                for kind, count in (("voltpay-shallow", shallow), ("voltpay-deep", deep)):
                    await quiet()
                    await self._voltpay_pipeline(voltpay, db, kind, database, 0, count)
            if config.profile:
                await quiet()
                await self._profile_pipeline(voltpay, database, db)
        finally:
            await voltpay.stop()

    async def _bridges(self) -> None:
        assert self.stub is not None
        for number in range(max(1, self.config.pipeline_rounds)):
            for kind, mode in (("bridges-stub", "bridges"), ("raw-stub", "raw")):
                await self._probe(kind, "-", number, self.stub.url, mode, self.config.stub_events)

    # -- pay while the pipeline drains, and memory -------------------------

    async def _drain(
        self, voltpay: Service, database: str, db: BenchDb, quiet: Callable[[], Awaitable[None]]
    ) -> None:
        config = self.config
        connections = config.drain_connections
        for number in range(config.drain_rounds):
            for state in in_turns(number, "idle", "draining"):
                await quiet()
                backlog = 0
                if state == "draining":
                    # Enough to outlast the window even at the idle drain rate.
                    backlog = max(500, int(self._stub_pipeline_rate * (config.duration + 2) * 1.2))
                sent_before = 0

                async def on_start(backlog: int = backlog) -> None:
                    nonlocal sent_before
                    if backlog:
                        await db.insert_backlog(backlog)
                    sent_before = await db.notifications_sent()

                result = await self._wrk_pay(
                    voltpay, "voltpay", database, db, connections, on_start=on_start
                )
                sent_after = await db.notifications_sent()
                waiting = await db.events_waiting()
                sample = DrainSample(
                    state,
                    number,
                    result.rps,
                    result.p99_ms,
                    backlog,
                    sent_after - sent_before,
                    waiting,
                )
                self.results.drain.append(sample)
                _say(
                    f"drain     {state:8} round {number + 1}: pay {result.rps:8.1f} req/s  "
                    f"p99 {result.p99_ms:7.2f} ms; {sample.delivered_during} SMS during the "
                    f"window, {waiting} events left after it (backlog {backlog})"
                )
                if state == "draining" and waiting == 0:
                    self.results.notes.append(
                        "drain: the backlog was gone before the window ended (round "
                        f"{number + 1}); raise --duration or the backlog for a steadier figure"
                    )

    async def _bus_memory(self, database: str, db: BenchDb, url: str) -> None:
        """RSS of a daemon and of its embedded bus over a long run of events."""
        config = self.config
        voltpay = await self._start_voltpay(f"{database}-bus-memory", url, None, db)
        try:
            sample = await bus_memory.measure(
                voltpay.url,
                voltpay.process.pid,
                database=database,
                events=config.bus_memory_events,
                warm_up=config.bus_memory_warm_up,
            )
        finally:
            await voltpay.stop()
        self.results.bus_memory.append(sample)
        for which, points in (("daemon", sample.daemon_kib), ("bus", sample.bus_kib)):
            readings = ", ".join(f"{kib / 1024:.1f} MiB after {n}" for n, kib in points)
            _say(
                f"bus-memory {database} {which}: {readings} events; "
                f"{sample.growth_bytes_per_event(which):.0f} B/event after warm-up"
            )

    async def _rss(self, voltpay: Service, database: str, db: BenchDb) -> None:
        config = self.config
        connections = config.top_connections
        key = ("voltpay", "pay", database, connections)
        if config.warmup:
            warm = await self._pay_file(db, self._bills_for(key, config.warmup))
            await run_wrk(
                voltpay.url,
                connections=connections,
                duration=config.warmup,
                threads=config.wrk_threads,
                mode="pay",
                data_file=warm,
            )
        data = await self._pay_file(db, self._bills_for(key, config.rss_seconds))
        pid = voltpay.process.pid
        start = rss_kib(pid)
        began = time.monotonic()
        trace: list[tuple[float, int]] = [(0.0, start)]
        load = asyncio.create_task(
            run_wrk(
                voltpay.url,
                connections=connections,
                duration=config.rss_seconds,
                threads=config.wrk_threads,
                mode="pay",
                data_file=data,
            )
        )
        step = max(1.0, config.rss_seconds / 30)
        while not load.done():
            await asyncio.wait({load}, timeout=step)
            trace.append((round(time.monotonic() - began, 1), rss_kib(pid)))
        result = load.result()
        end = trace[-1][1]
        await db.expire_pending()
        sample = RssSample(database, config.rss_seconds, connections, start, end, result.rps, trace)
        self.results.rss.append(sample)
        _say(
            f"rss       {database}: {start / 1024:.1f} MiB after warm-up -> {end / 1024:.1f} MiB "
            f"after {config.rss_seconds} s of pay at {result.rps:.0f} req/s "
            f"({100 * (end - start) / start:+.1f}%)"
        )

    # -- profiles ----------------------------------------------------------

    def _profile_path(self, name: str) -> Path:
        folder = self.config.out_dir / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.collapsed.txt"

    async def _profile_pay(self, voltpay: Service, database: str, db: BenchDb) -> None:
        connections = self.config.top_connections
        output = self._profile_path(f"pay-{database}-c{connections}")
        recording = Recording(voltpay.process.pid, output)

        async def begin() -> None:
            await recording.start()

        try:
            result = await self._wrk_pay(
                voltpay, "voltpay", database, db, connections, on_start=begin
            )
        finally:
            await recording.stop()
        self._keep_profile(f"pay-{database}", output, f"{result.rps:.0f} req/s while profiled")

    async def _profile_pipeline(self, voltpay: Service, database: str, db: BenchDb) -> None:
        output = self._profile_path(f"pipeline-embedded-{database}")
        recording = Recording(voltpay.process.pid, output)
        await recording.start()
        try:
            sample = await self._voltpay_pipeline(
                voltpay, db, "profiled-embedded", database, 0, self.config.pipeline_events
            )
        finally:
            await recording.stop()
        self.results.pipeline.remove(sample)
        self._keep_profile(
            f"pipeline-{database}", output, f"{sample.events_per_s:.0f} events/s while profiled"
        )

    def _keep_profile(self, name: str, collapsed: Path, context: str) -> None:
        if not collapsed.exists():
            self.results.notes.append(f"profile {name}: py-spy wrote nothing")
            return
        summary = f"{name}: {context}\n\n" + summarize(collapsed)
        collapsed.with_name(collapsed.name.replace(".collapsed.txt", ".top.txt")).write_text(
            summary
        )
        self.results.profiles[name] = str(collapsed)
        _say(f"profile   {name}: {collapsed}")


async def run(config: BenchConfig) -> Results:
    bench = Bench(config)
    with contextlib.suppress(Exception):
        (config.out_dir).mkdir(parents=True, exist_ok=True)
    return await bench.run()
