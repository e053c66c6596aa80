"""The chaos run: daemons under a steady mixed load, killed and restarted,
then measured from the database and the SMS that really went out.

    python -m tests.e2e.chaos [--mode postgres|embedded] [--daemons N]
        [--duration SECONDS] [--users N] [--seed N] [--short] [--keep]

In ``postgres`` mode N daemons (3 by default) share one PostgreSQL database
and one SNS/SQS endpoint (moto's server in a process of its own, which
outlives every daemon as AWS does; one topic, one queue, one dead-letter
queue for all). In ``embedded`` mode one daemon runs on its defaults: the
SQLite file under its working folder's ``./var/`` and the SNS/SQS endpoint it
starts itself. Either way the daemons text through a fake Twilio server and
take money in through a fake Paystack server (gateway funding mode), both
running in this process, so every SMS a phone would get and every payment
made on the gateway are counted.

The run, in order: virtual users register, fund their wallets, verify meters
and pay bills, each request sent to the daemons in turn; every 3-6 s a random
daemon is killed with SIGKILL and started again on its port about a second
later; then each daemon in turn is stopped with SIGTERM (it must exit 0) and
started again; then the load stops and the daemons get a bounded quiet period
to settle every bill and funding and text every event; then they are stopped
with SIGTERM. A user funds the wallet as a customer does: an intent from
add-funds, paid on the gateway's checkout; the run then plays the gateway's
``charge.success`` webhook, sent once, or 2-3 times (in parallel to
different daemons, or one after another), or never (the daemons' reconciler
must find the payment), or to a daemon just as it is killed or stopped; a
delivery without a 200 is sent again to the next daemon, as Paystack retries.

The figures read at the end decide PASS or FAIL: no wallet below zero or out
of step with its ledger, no bill debited twice, none left processing, no 5xx
beyond the two that are answers (503 to retry elsewhere, 502 ``vend_failed``
for a refunded vend), no prepaid token on two bills, every committed event
audited and texted exactly once, and every funding paid on the gateway
credited exactly once (succeeded, with one ledger credit of its amount) and
none credited twice. Intents never paid may stay pending (shown, not judged).

The last line printed holds the figures as ``key=value`` pairs and the
verdict; the exit code is 0 on PASS and 1 on FAIL. The run folder (a
temporary folder, kept on FAIL or with ``--keep``) holds every daemon's JSON
log, one pair of files per life, and ``figures.json`` with the figures and
the rows behind each nonzero one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
    Set,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import asyncpg

from tests.e2e.conftest import (
    READY_TIMEOUT_SECONDS,
    DaemonProcess,
    daemon_environment,
    external_aws_env,
    free_port,
)
from tests.fakes.moto_process import moto_process
from tests.fakes.paystack_server import FakePaystackServer
from tests.fakes.twilio_server import FakeTwilioServer
from tests.postgres import scratch_database

PASSWORD = "chaos-correct-horse"
# Every user buys for this meter, so its tokens are issued by every daemon.
SHARED_METER = "45067812345"
OTHER_METER = "A123456"
SHARED_METER_SHARE = 0.75
BILL_AMOUNT = Decimal("25.00")
# Small enough that each user funds the wallet every few bills.
TOP_UP = Decimal("200.00")
# Enough for a double-pay attempt and one more bill.
LOW_BALANCE = 3 * BILL_AMOUNT
DOUBLE_PAY_SHARE = 0.1
THINK_SECONDS = (0.05, 0.3)

DAEMON_SETTINGS = {
    "VOLTPAY_LOG__FORMAT": "json",
    "VOLTPAY_PROVIDER__FAILURE_RATE": "0.05",
    "VOLTPAY_PROVIDER__TIMEOUT_RATE": "0.05",
    "VOLTPAY_PROVIDER__VEND_TIMEOUT_SECONDS": "2",
    "VOLTPAY_BILLING__RECONCILE_INTERVAL_SECONDS": "1",
}
TWILIO_FROM = "+15005550006"
PAYSTACK_SECRET = "sk_test_" + "c" * 40
WEBHOOK_PATH = "/api/gateway/paystack/webhook"
# Gateway funding: a webhook not in within RECONCILE_AFTER seconds of the
# intent is looked for by the reconciler, so lost webhooks settle well inside
# the quiet period; the verify timeout keeps a dead daemon's lease short.
FUNDING_SETTINGS = {
    "VOLTPAY_FUNDING__MODE": "gateway",
    "VOLTPAY_FUNDING__SECRET_KEY": PAYSTACK_SECRET,
    "VOLTPAY_FUNDING__CALLBACK_URL": "https://shop.example.com/funded",
    "VOLTPAY_FUNDING__RECONCILE_AFTER_SECONDS": "4",
    "VOLTPAY_FUNDING__RECONCILE_MAX_WAIT_SECONDS": "4",
    "VOLTPAY_FUNDING__RECONCILE_INTERVAL_SECONDS": "0.5",
    "VOLTPAY_FUNDING__TIMEOUT_SECONDS": "3",
    # Gateway mode withholds every SMS until the number is proven by a code;
    # the run counts the texts of every event, so its users' numbers are
    # taken as proven (phone verification has tests of its own).
    "VOLTPAY_SIGNUP__VERIFY_PHONE": "false",
}
# What becomes of each paid funding's charge.success webhook, with its share:
# sent once; sent 2-3 times (in parallel to different daemons, or one after
# another); never sent (the reconciler must find the payment); or sent to a
# daemon just as it is killed or stopped.
WEBHOOK_FATES = ("once", "duplicated", "lost", "at_kill")
WEBHOOK_FATE_SHARES = (0.35, 0.3, 0.2, 0.15)
WEBHOOK_FIRST_DELAY_SECONDS = (0.0, 0.5)
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)
# Paystack retries a delivery that got no 200 for days; the run for a minute,
# past which the reconciler is the payment's only way in.
WEBHOOK_RETRY_WINDOW_SECONDS = 60.0
WEBHOOK_RETRY_PAUSE_SECONDS = (0.2, 1.0)
# How long a user waits for a paid funding to be credited before going on.
FUNDING_PATIENCE_SECONDS = 20.0
FUNDING_POLL_SECONDS = 0.5

KILL_PAUSE_SECONDS = (3.0, 6.0)
RESTART_DELAY_SECONDS = 1.0
# The daemon's drain takes at most its 25 s grace.
SHUTDOWN_TIMEOUT_SECONDS = 40.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=3)
# How long one request keeps trying the daemons in turn before it is given up.
RETRY_WINDOW_SECONDS = 60.0
# A key whose claim stays in progress this long belongs to a request whose
# daemon died (the claim then lasts minutes): the user moves on.
IN_PROGRESS_PATIENCE_SECONDS = 6.0
MAX_RETRY_AFTER_SECONDS = 5.0
USERS_STOP_TIMEOUT_SECONDS = 30.0
QUIET_SECONDS = 60.0
# Short enough that a short run stays under 90 s even when it never settles.
SHORT_QUIET_SECONDS = 25.0
DEFAULT_DURATION_SECONDS = 180.0
SHORT_DURATION_SECONDS = 25.0
DETAIL_ROWS = 50
TAIL_LINES = 10

T = TypeVar("T")

# PR_SET_PDEATHSIG from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


class ChaosError(Exception):
    """The run could not do what it says (a daemon that never got ready, say)."""


class Abandoned(Exception):
    """A request given up on: no daemon answered it within the retry window,
    or its Idempotency-Key stayed claimed by a request whose daemon died."""


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


# -- options ------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    mode: str
    daemons: int
    duration: float
    users: int
    seed: int
    short: bool
    keep: bool
    quiet_seconds: float


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.e2e.chaos",
        description="Daemons under load, killed and restarted; PASS or FAIL on the last line.",
    )
    parser.add_argument("--mode", choices=("postgres", "embedded"), default="postgres")
    parser.add_argument(
        "--daemons", type=int, default=None, help="3 on postgres; embedded runs exactly 1"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds of kills (default {DEFAULT_DURATION_SECONDS:g}, "
        f"{SHORT_DURATION_SECONDS:g} with --short)",
    )
    parser.add_argument("--users", type=int, default=12, help="virtual users (default 12)")
    parser.add_argument("--seed", type=int, default=None, help="seeds every random choice")
    parser.add_argument(
        "--short", action="store_true", help="a run for CI: under 90 s from start to end"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder on PASS too")
    args = parser.parse_args(argv)
    daemons = args.daemons if args.daemons is not None else (3 if args.mode == "postgres" else 1)
    if args.mode == "embedded" and daemons != 1:
        parser.error("--mode embedded runs exactly one daemon (its SQLite file is its own)")
    if daemons < 1 or args.users < 1:
        parser.error("--daemons and --users must be at least 1")
    duration = args.duration
    if duration is None:
        duration = SHORT_DURATION_SECONDS if args.short else DEFAULT_DURATION_SECONDS
    if duration < 0:
        parser.error("--duration must not be negative")
    return Options(
        mode=args.mode,
        daemons=daemons,
        duration=duration,
        users=args.users,
        seed=args.seed if args.seed is not None else random.randrange(1_000_000),
        short=args.short,
        keep=args.keep,
        quiet_seconds=SHORT_QUIET_SECONDS if args.short else QUIET_SECONDS,
    )


# -- the fake Twilio and Paystack servers, each on a loop of its own -----------


@dataclass(frozen=True)
class TextMessage:
    """One SMS as Twilio accepted it."""

    to: str
    body: str
    sid: str
    created: str


class LoopThread:
    """An event loop in a thread of its own, so that a fake server's answers
    never wait behind the load on the run's loop: a late answer would make a
    daemon's client retry (text twice, time a verify call out) for a reason
    that is not the daemon's."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs ``coroutine`` on the thread's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def start(self) -> None:
        self._thread.start()

    async def stop(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                await self.call(last())
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self._loop.close()


class TwilioThread:
    """The fake Twilio server on a loop of its own."""

    def __init__(self) -> None:
        self.account_sid = "AC" + uuid.uuid4().hex
        self.auth_token = uuid.uuid4().hex
        self.fake = FakeTwilioServer(account_sid=self.account_sid, auth_token=self.auth_token)
        self._thread = LoopThread("fake-twilio")

    def settings(self) -> dict[str, str]:
        return {
            "VOLTPAY_TWILIO__ACCOUNT_SID": self.account_sid,
            "VOLTPAY_TWILIO__AUTH_TOKEN": self.auth_token,
            "VOLTPAY_TWILIO__FROM_NUMBER": TWILIO_FROM,
            "VOLTPAY_TWILIO__BASE_URL": self.fake.base_url,
        }

    async def start(self) -> None:
        self._thread.start()
        await self._thread.call(self.fake.start())

    async def stop(self) -> None:
        await self._thread.stop(self.fake.stop)

    def messages(self) -> list[TextMessage]:
        """Every message the fake accepted, in arrival order."""
        return [
            TextMessage(str(m["to"]), str(m["body"]), str(m["sid"]), str(m["date_created"]))
            for m in list(self.fake.messages)
        ]


class PaystackThread:
    """The fake Paystack server (initialize, verify) on a loop of its own;
    the run plays its customers paying on it and its webhook deliveries."""

    def __init__(self) -> None:
        self.fake = FakePaystackServer(secret_key=PAYSTACK_SECRET)
        self._thread = LoopThread("fake-paystack")
        self.paid: set[str] = set()

    def settings(self) -> dict[str, str]:
        return {**FUNDING_SETTINGS, "VOLTPAY_FUNDING__GATEWAY_URL": self.fake.base_url}

    async def start(self) -> None:
        self._thread.start()
        await self._thread.call(self.fake.start())

    async def stop(self) -> None:
        await self._thread.stop(self.fake.stop)

    async def pay(self, reference: str) -> tuple[bytes, str]:
        """The customer pays the checkout of ``reference``; the signed
        ``charge.success`` webhook Paystack then sends."""

        async def on_the_gateway() -> tuple[bytes, str]:
            self.fake.pay(reference)
            return self.fake.charge_success(reference)

        webhook = await self._thread.call(on_the_gateway())
        self.paid.add(reference)
        return webhook


# -- the daemons -----------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when this process ends,
    so that no daemon outlives a runner that was itself killed."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return arm


@dataclass
class Slot:
    """One daemon's place: its port, kept across its lives (one process each)."""

    index: int
    port: int
    lives: list[DaemonProcess] = field(default_factory=list)

    @property
    def current(self) -> DaemonProcess:
        return self.lives[-1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Fleet:
    """The daemons of one run, each restarted on its own port; every process
    ever started is SIGKILLed and reaped by ``cleanup``."""

    def __init__(self, run_dir: Path, count: int, settings: Mapping[str, str]) -> None:
        self._run_dir = run_dir
        self._settings = dict(settings)
        self.slots = [Slot(index, free_port()) for index in range(count)]
        self._preexec = _die_with_parent()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        self.restart_failures: list[str] = []
        self.unclean_exits: list[str] = []

    @property
    def size(self) -> int:
        return len(self.slots)

    def start(self, index: int) -> DaemonProcess:
        slot = self.slots[index]
        life = len(slot.lives)
        stdout_path = self._run_dir / f"daemon-{index}.life-{life}.stdout.log"
        stderr_path = self._run_dir / f"daemon-{index}.life-{life}.stderr.log"
        stdout = stdout_path.open("wb")
        stderr = stderr_path.open("wb")
        env = daemon_environment({**self._settings, "VOLTPAY_HTTP__PORT": str(slot.port)})
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "voltpay", "run"],
                cwd=self._run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                preexec_fn=self._preexec,
            )
        except BaseException:
            stdout.close()
            stderr.close()
            raise
        daemon = DaemonProcess(
            process, slot.port, self._run_dir, stdout_path, stderr_path, _files=[stdout, stderr]
        )
        slot.lives.append(daemon)
        return daemon

    async def wait_ready(self, index: int, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Seconds until /readyz answered 200; ChaosError if the daemon exits
        or stays unready past ``timeout``."""
        slot = self.slots[index]
        daemon = slot.current
        started = time.monotonic()
        while True:
            if not daemon.running:
                raise ChaosError(
                    f"daemon {index} (pid {daemon.pid}) exited with "
                    f"{daemon.process.poll()} before it was ready"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._http.get(slot.base_url + "/readyz") as response:
                    if response.status == 200:
                        return time.monotonic() - started
            if time.monotonic() - started >= timeout:
                raise ChaosError(f"daemon {index} (pid {daemon.pid}) not ready in {timeout:g} s")
            await asyncio.sleep(0.1)

    async def restart(self, index: int) -> float:
        """Start the slot's next life and wait until it is ready; one more
        try when it is not (each failure is a figure of the run)."""
        for attempt in (1, 2):
            self.start(index)
            try:
                return await self.wait_ready(index)
            except ChaosError as exc:
                self.restart_failures.append(str(exc))
                say(f"{exc} (attempt {attempt})")
                await self.kill(index)
        raise ChaosError(f"daemon {index} could not be started again")

    async def wait_exit(self, index: int, timeout: float) -> int | None:
        daemon = self.slots[index].current
        deadline = time.monotonic() + timeout
        while (code := daemon.process.poll()) is None:
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return code

    async def kill(self, index: int) -> None:
        daemon = self.slots[index].current
        daemon.send(signal.SIGKILL)
        await self.wait_exit(index, 10)

    async def terminate(self, index: int) -> int | None:
        """SIGTERM and wait for the exit code; anything but 0 is noted."""
        daemon = self.slots[index].current
        daemon.send(signal.SIGTERM)
        code = await self.wait_exit(index, SHUTDOWN_TIMEOUT_SECONDS)
        if code != 0:
            what = "did not exit" if code is None else f"exited with {code}"
            self.unclean_exits.append(
                f"daemon {index} (pid {daemon.pid}) {what} after SIGTERM "
                f"(log {daemon.stderr_path.name})"
            )
            if code is None:
                await self.kill(index)
        return code

    async def cleanup(self) -> None:
        for slot in self.slots:
            for daemon in slot.lives:
                if daemon.running:
                    daemon.process.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(daemon.process.wait, 15)
                daemon.close_files()
        await self._http.close()

    def logs(self) -> list[Path]:
        return [daemon.stderr_path for slot in self.slots for daemon in slot.lives]

    def tails(self, lines: int = TAIL_LINES) -> str:
        """The end of each slot's last stderr, a line each cut to a readable width."""
        parts = []
        for slot in self.slots:
            if not slot.lives:
                continue
            daemon = slot.current
            text = daemon.stderr_path.read_text(encoding="utf-8", errors="replace")
            tail = [line[:300] for line in text.splitlines()[-lines:]]
            parts.append(
                f"--- daemon {slot.index}, life {len(slot.lives) - 1} "
                f"(pid {daemon.pid}, exit {daemon.process.poll()}): "
                f"{daemon.stderr_path} ---\n" + "\n".join(tail)
            )
        return "\n".join(parts)


# -- the load ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    slot: int
    request_id: str = ""
    retry_after: float | None = None

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict):
            code = self.body.get("code")
            return code if isinstance(code, str) else None
        return None

    def field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None


@dataclass
class LoadStats:
    """What the load saw. ``requests`` counts every attempt sent;
    ``connection_errors`` and ``timeouts`` those that got no HTTP answer at
    all (so they never count as a 5xx)."""

    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    unavailable_503: int = 0
    in_progress_409: int = 0
    throttled_429: int = 0
    abandoned: int = 0
    double_pays: int = 0
    double_pay_two_winners: int = 0
    # The gateway's side: webhook deliveries sent (each try counts), what
    # became of each paid funding's webhook, and deliveries given up.
    webhooks: int = 0
    webhook_fates: Counter[str] = field(default_factory=Counter)
    webhooks_given_up: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors_5xx: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)

    def at(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def note(self, what: list[dict[str, Any]], op: str, answer: Answer) -> None:
        detail = answer.field("detail") if answer.code else str(answer.body)[:200]
        what.append(
            {
                "at": self.at(),
                "op": op,
                "status": answer.status,
                "code": answer.code,
                "daemon": answer.slot,
                "request_id": answer.request_id,
                "detail": detail,
            }
        )


@dataclass
class _Tries:
    """How one request has fared so far, across the daemons it went to."""

    started: float = field(default_factory=time.monotonic)
    misses: int = 0
    in_progress_since: float | None = None


class Transport:
    """Sends each request to the daemons in turn. A request that gets no
    answer, or a 503, goes on to the next daemon: a POST with the same
    Idempotency-Key, so whichever daemon ran it first, it runs once. A 409
    ``idempotency_in_progress`` or a 429 is tried again after its
    Retry-After; a key that stays in progress past the patience is given up.
    Every attempt carries an X-Request-ID (``chaos-OP-N.ATTEMPT``), which the
    daemons' log lines carry too."""

    def __init__(self, http: aiohttp.ClientSession, fleet: Fleet, stats: LoadStats) -> None:
        self._http = http
        self._urls = [slot.base_url for slot in fleet.slots]
        self._turn = itertools.count()
        self._numbers = itertools.count(1)
        self._stats = stats

    def next_slot(self) -> int:
        return next(self._turn) % len(self._urls)

    async def send(
        self,
        method: str,
        path: str,
        op: str,
        *,
        token: str | None = None,
        body: Any = None,
        idempotent: bool = True,
        slot: int | None = None,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "POST" and idempotent:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        slot = self.next_slot() if slot is None else slot % len(self._urls)
        request_id = f"chaos-{op}-{next(self._numbers)}"
        tries = _Tries()
        for attempt in itertools.count(1):
            headers["X-Request-ID"] = f"{request_id}.{attempt}"
            answer = await self._once(method, path, slot, headers, body)
            pause = self._pause_before_retry(answer, tries)
            if pause is None:
                assert answer is not None
                self._judge(op, answer)
                return answer
            if time.monotonic() - tries.started >= RETRY_WINDOW_SECONDS:
                raise self._abandon()
            await asyncio.sleep(pause)
            slot = (slot + 1) % len(self._urls)
        raise AssertionError("unreachable")

    def _pause_before_retry(self, answer: Answer | None, tries: _Tries) -> float | None:
        """Seconds to wait before the next try, or None when this answer is final."""
        if answer is None or answer.status == 503:
            if answer is not None:
                self._stats.unavailable_503 += 1
            tries.misses += 1
            return min(0.05 * tries.misses, 0.5)
        if answer.code == "idempotency_in_progress":
            self._stats.in_progress_409 += 1
            now = time.monotonic()
            tries.in_progress_since = tries.in_progress_since or now
            if now - tries.in_progress_since >= IN_PROGRESS_PATIENCE_SECONDS:
                raise self._abandon()
            return answer.retry_after or 1.0
        if answer.status == 429:
            self._stats.throttled_429 += 1
            return min(answer.retry_after or 1.0, MAX_RETRY_AFTER_SECONDS)
        return None

    def _abandon(self) -> Abandoned:
        self._stats.abandoned += 1
        return Abandoned()

    def _judge(self, op: str, answer: Answer) -> None:
        self._stats.outcomes[
            f"{op} {answer.status}" + (f" {answer.code}" if answer.code else "")
        ] += 1
        if answer.status >= 500 and not (answer.status == 502 and answer.code == "vend_failed"):
            self._stats.note(self._stats.errors_5xx, op, answer)

    async def _once(
        self, method: str, path: str, slot: int, headers: Mapping[str, str], body: Any
    ) -> Answer | None:
        """The daemon's answer, or None when none came (refused, reset, timed out)."""
        self._stats.requests += 1
        kwargs: dict[str, Any] = {"headers": headers, "timeout": REQUEST_TIMEOUT}
        if body is not None:
            kwargs["json"] = body
        try:
            async with self._http.request(method, self._urls[slot] + path, **kwargs) as response:
                raw = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                retry_after = response.headers.get("Retry-After", "")
        except TimeoutError:
            self._stats.timeouts += 1
            return None
        except aiohttp.ClientError:
            self._stats.connection_errors += 1
            return None
        payload: Any = None
        if raw and "json" in content_type:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw[:200].decode("utf-8", "replace")
        return Answer(
            status,
            payload,
            slot,
            request_id=headers.get("X-Request-ID", ""),
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )


class Webhooks:
    """The gateway's ``charge.success`` deliveries, as Paystack makes them:
    each paid funding's webhook is sent once, or 2-3 times (in parallel to
    different daemons, or one after another), or never, or held until a
    daemon is about to be killed or stopped and sent to it then. A delivery
    that gets no 200 (refused, reset, timed out, 5xx) is sent again, to the
    next daemon, until the retry window closes."""

    def __init__(
        self, http: aiohttp.ClientSession, fleet: Fleet, stats: LoadStats, rng: random.Random
    ) -> None:
        self._http = http
        self._urls = [slot.base_url for slot in fleet.slots]
        self._stats = stats
        self._rng = rng
        self._turn = itertools.count()
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[tuple[bytes, str]] = []

    @property
    def idle(self) -> bool:
        """No delivery under way and none held."""
        return not self._tasks and not self._held

    def paid(self, body: bytes, signature: str) -> None:
        """A funding was paid on the gateway: its webhook's fate is drawn."""
        fate = self._rng.choices(WEBHOOK_FATES, weights=WEBHOOK_FATE_SHARES)[0]
        self._stats.webhook_fates[fate] += 1
        if fate == "lost":
            return
        if fate == "at_kill":
            self._held.append((body, signature))
            return
        copies = 1 if fate == "once" else self._rng.choice((2, 3))
        parallel = copies > 1 and self._rng.random() < 0.5
        self._spawn(self._send(body, signature, copies, parallel))

    def strike(self, index: int) -> int:
        """Sends every held webhook to daemon ``index``, which is about to be
        killed or stopped; how many."""
        held, self._held = self._held, []
        for body, signature in held:
            self._spawn(self._deliver(body, signature, index))
        return len(held)

    def release(self) -> None:
        """Sends the webhooks still held (no daemon went down after them)."""
        held, self._held = self._held, []
        for body, signature in held:
            self._spawn(self._deliver(body, signature, next(self._turn)))

    async def stop(self) -> None:
        """Deliveries still under way are given up."""
        self.release()
        for task in list(self._tasks):
            task.cancel()
            self._stats.webhooks_given_up.append(f"{task.get_name()} still under way at the end")
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine, name=f"webhook-{next(self._numbers)}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._stats.harness_errors.append(f"{task.get_name()}: {task.exception()!r}")

    async def _send(self, body: bytes, signature: str, copies: int, parallel: bool) -> None:
        await asyncio.sleep(self._rng.uniform(*WEBHOOK_FIRST_DELAY_SECONDS))
        first = next(self._turn)
        if parallel:
            await asyncio.gather(
                *(self._deliver(body, signature, first + n) for n in range(copies))
            )
            return
        for n in range(copies):
            await self._deliver(body, signature, first + n)
            await asyncio.sleep(self._rng.uniform(0.0, 1.0))

    async def _deliver(self, body: bytes, signature: str, slot: int) -> None:
        """One delivery, tried until a daemon answers 200 or the window closes."""
        started = time.monotonic()
        request_id = f"chaos-webhook-{next(self._numbers)}"
        for attempt in itertools.count(1):
            slot %= len(self._urls)
            answer = await self._post(body, signature, slot, f"{request_id}.{attempt}")
            if answer is not None:
                self._judge(answer)
                if answer.status == 200:
                    return
            if time.monotonic() - started >= WEBHOOK_RETRY_WINDOW_SECONDS:
                self._stats.webhooks_given_up.append(f"{request_id}: no 200 in the retry window")
                return
            await asyncio.sleep(self._rng.uniform(*WEBHOOK_RETRY_PAUSE_SECONDS))
            slot += 1

    async def _post(self, body: bytes, signature: str, slot: int, request_id: str) -> Answer | None:
        self._stats.webhooks += 1
        headers = {
            "Content-Type": "application/json",
            "x-paystack-signature": signature,
            "X-Request-ID": request_id,
        }
        try:
            async with self._http.post(
                self._urls[slot] + WEBHOOK_PATH, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT
            ) as response:
                status = response.status
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self._stats.outcomes["webhook no answer"] += 1
            return None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw[:200].decode("utf-8", "replace")
        return Answer(status, payload, slot, request_id=request_id)

    def _judge(self, answer: Answer) -> None:
        outcome = answer.field("status") if answer.status == 200 else answer.code
        self._stats.outcomes[f"webhook {answer.status} {outcome}"] += 1
        if answer.status >= 500 and answer.status != 503:
            self._stats.note(self._stats.errors_5xx, "webhook", answer)
        elif answer.status not in (200, 503):
            self._stats.note(self._stats.unexpected, "webhook", answer)


# Answers each operation may give in a run like this one; anything else is noted.
EXPECTED = {
    "register": {201, 409},
    "login": {200},
    "add-funds": {201},
    "verify": {201},
    "pay": {200, 202, 402, 409, 410, 502},
    "read": {200},
}


@dataclass(frozen=True)
class Gateway:
    """What a user meets of the payment gateway: its checkout, where the
    payment is made, and the webhooks it then sends."""

    paystack: PaystackThread
    webhooks: Webhooks


class VirtualUser:
    """One person: signs up, funds the wallet through the gateway, then
    verifies and pays bills (now and then paying one bill on two daemons at
    once), reading their wallet, bills and SMS in between, until told to stop."""

    def __init__(
        self,
        number: int,
        run_tag: str,
        transport: Transport,
        gateway: Gateway,
        rng: random.Random,
        stats: LoadStats,
    ) -> None:
        self.number = number
        self.username = f"chaos_{run_tag}_{number}"
        self.phone = f"+23480{number:08d}"
        self._t = transport
        self._gateway = gateway
        self._rng = rng
        self._stop = asyncio.Event()
        self._stats = stats
        self.token: str | None = None
        self.wallet_id: str | None = None
        self.balance: Decimal | None = None
        self._unsettled: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        try:
            if not await self._sign_up(stop):
                return
            await self._top_up()
            while not stop.is_set():
                await self._one_bill()
                await self._think()
                await self._browse()
                await self._think()
        except Exception:
            self._stats.harness_errors.append(f"user {self.number}: {traceback.format_exc()}")

    async def _think(self) -> None:
        await asyncio.sleep(self._rng.uniform(*THINK_SECONDS))

    def _expect(self, op: str, answer: Answer, wanted: set[int] | None = None) -> bool:
        if answer.status in (wanted or EXPECTED[op]):
            return True
        if answer.status < 500:  # a 5xx is noted as such already
            self._stats.note(self._stats.unexpected, op, answer)
        return False

    async def _sign_up(self, stop: asyncio.Event) -> bool:
        """Registered (or found registered by an earlier try) and logged in."""
        registration = {"username": self.username, "password": PASSWORD, "phoneNumber": self.phone}
        while not stop.is_set():
            with contextlib.suppress(Abandoned):
                answer = await self._t.send(
                    "POST", "/api/auth/register", "register", body=registration
                )
                if answer.status == 201 or answer.code == "username_taken":
                    break
                self._expect("register", answer, {201})
                await asyncio.sleep(1)
        credentials = {"username": self.username, "password": PASSWORD}
        while not stop.is_set():
            with contextlib.suppress(Abandoned):
                # A login's answer is never replayed: a retry logs in again.
                answer = await self._t.send(
                    "POST", "/api/auth/login", "login", body=credentials, idempotent=False
                )
                if self._expect("login", answer):
                    self.token = answer.field("token")
                    self.wallet_id = answer.field("walletId")
                    return True
                await asyncio.sleep(1)
        return False

    async def _post(self, path: str, op: str, body: Any = None, slot: int | None = None) -> Answer:
        return await self._t.send("POST", path, op, token=self.token, body=body, slot=slot)

    async def _get(self, path: str) -> Answer:
        return await self._t.send("GET", path, "read", token=self.token)

    async def _top_up(self) -> None:
        """A funding intent, paid on the gateway's checkout; then the wait
        for its credit, which the webhook or the reconciler brings."""
        try:
            answer = await self._post(
                f"/api/wallets/{self.wallet_id}/add-funds", "add-funds", {"amount": str(TOP_UP)}
            )
        except Abandoned:
            await self._read_balance()
            return
        if self._expect("add-funds", answer):
            body, signature = await self._gateway.paystack.pay(str(answer.field("reference")))
            self._gateway.webhooks.paid(body, signature)
            await self._await_credit(str(answer.field("fundingId")))
        await self._read_balance()

    async def _await_credit(self, funding_id: str) -> None:
        deadline = time.monotonic() + FUNDING_PATIENCE_SECONDS
        while time.monotonic() < deadline and not self._stop.is_set():
            with contextlib.suppress(Abandoned):
                answer = await self._get(f"/api/fundings/{funding_id}")
                if self._expect("read", answer) and answer.field("status") != "pending":
                    return
            await asyncio.sleep(FUNDING_POLL_SECONDS)

    async def _read_balance(self) -> None:
        self.balance = None
        with contextlib.suppress(Abandoned):
            answer = await self._get(f"/api/wallets/{self.wallet_id}")
            if self._expect("read", answer):
                self.balance = Decimal(answer.field("balance"))

    async def _one_bill(self) -> None:
        if self.balance is None or self.balance < LOW_BALANCE:
            await self._top_up()
        meter = SHARED_METER if self._rng.random() < SHARED_METER_SHARE else OTHER_METER
        try:
            answer = await self._post(
                "/api/electricity/verify",
                "verify",
                {"meterNumber": meter, "amount": str(BILL_AMOUNT)},
            )
        except Abandoned:
            return
        if not self._expect("verify", answer):
            return
        bill_id = str(answer.field("billId"))
        if self._rng.random() < DOUBLE_PAY_SHARE:
            await self._double_pay(bill_id)
        else:
            await self._pay(bill_id)

    async def _pay(self, bill_id: str, *, again: bool = True) -> None:
        try:
            answer = await self._post(f"/api/Vend/{bill_id}/pay", "pay")
        except Abandoned:
            # Its first try may have died with a daemon before the payment
            # started: a bill still pending is paid with a new key.
            if again and await self._bill_status(bill_id) == "pending":
                await self._pay(bill_id, again=False)
            return
        self._after_pay(bill_id, answer)
        if answer.status == 402 and again:
            await self._top_up()
            await self._pay(bill_id, again=False)

    def _after_pay(self, bill_id: str, answer: Answer) -> None:
        if not self._expect("pay", answer):
            return
        if answer.status in (200, 202):
            balance = answer.field("walletBalance")
            self.balance = Decimal(balance) if balance is not None else None
        if answer.status == 202:
            self._unsettled = [*self._unsettled[-4:], bill_id]
        elif answer.status in (402, 502):
            self.balance = None

    async def _double_pay(self, bill_id: str) -> None:
        """The same bill paid on two daemons at once, each with its own key:
        only the bill's own guard stands between them."""
        first = self._t.next_slot()
        answers = await asyncio.gather(
            self._post(f"/api/Vend/{bill_id}/pay", "pay", slot=first),
            self._post(f"/api/Vend/{bill_id}/pay", "pay", slot=first + 1),
            return_exceptions=True,
        )
        self._stats.double_pays += 1
        winners = 0
        for answer in answers:
            if isinstance(answer, Abandoned):
                continue
            if isinstance(answer, BaseException):
                raise answer
            self._after_pay(bill_id, answer)
            winners += answer.status in (200, 202, 502)
        if winners > 1:
            self._stats.double_pay_two_winners += 1

    async def _bill_status(self, bill_id: str) -> str | None:
        with contextlib.suppress(Abandoned):
            answer = await self._get(f"/api/bills/{bill_id}")
            if self._expect("read", answer):
                return str(answer.field("status"))
        return None

    async def _browse(self) -> None:
        choice = self._rng.randrange(5)
        if choice == 0:
            await self._read_balance()
        elif choice == 1 and self._unsettled:
            await self._bill_status(self._unsettled.pop(0))
        else:
            path = (
                "/api/notifications?limit=10",
                "/api/bills?limit=10",
                f"/api/wallets/{self.wallet_id}/transactions?limit=10",
                "/api/me",
            )[choice - 1]
            with contextlib.suppress(Abandoned):
                self._expect("read", await self._get(path))


class Load:
    """The virtual users, running until ``stop``."""

    def __init__(
        self, transport: Transport, gateway: Gateway, users: int, seed: int, stats: LoadStats
    ) -> None:
        run_tag = uuid.uuid4().hex[:8]
        self._stop = asyncio.Event()
        self._users = [
            VirtualUser(n, run_tag, transport, gateway, random.Random(seed * 1000 + n), stats)
            for n in range(users)
        ]
        self._stats = stats
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(user.run(self._stop), name=f"user-{user.number}")
            for user in self._users
        ]

    async def stop(self) -> None:
        """Each user finishes the request in hand; one that cannot is cancelled."""
        self._stop.set()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=USERS_STOP_TIMEOUT_SECONDS)
        for task in late:
            task.cancel()
            self._stats.harness_errors.append(
                f"{task.get_name()} did not stop within {USERS_STOP_TIMEOUT_SECONDS:g} s"
            )
        await asyncio.gather(*late, return_exceptions=True)


# -- the database, read directly ----------------------------------------------


class Reader(Protocol):
    async def rows(self, query: str) -> list[tuple[Any, ...]]: ...


class PostgresReader:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        return [tuple(record) for record in await self._connection.fetch(query)]


class SqliteReader:
    """Reads the daemon's SQLite file; safe beside a running daemon (WAL)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._rows, query)

    def _rows(self, query: str) -> list[tuple[Any, ...]]:
        # mode=rw: a missing file is an error, not a new empty database.
        connection = sqlite3.connect(f"file:{self._path}?mode=rw", uri=True, timeout=10)
        try:
            return [tuple(row) for row in connection.execute(query).fetchall()]
        finally:
            connection.close()


PROGRESS_QUERY = """
SELECT
  (SELECT COUNT(*) FROM bills WHERE status = 'processing'),
  (SELECT COUNT(*) FROM outbox WHERE published_at IS NULL),
  (SELECT COUNT(*) FROM outbox),
  (SELECT COUNT(*) FROM notifications WHERE status = 'sent'),
  (SELECT COUNT(*) FROM audit_log)
"""
PENDING_FUNDINGS_QUERY = "SELECT reference FROM fundings WHERE status = 'pending'"


@dataclass(frozen=True)
class Progress:
    processing: int
    unpublished: int
    committed: int
    texted: int
    audited: int
    # Fundings paid on the gateway and not settled yet.
    paid_pending: int

    @property
    def settled(self) -> bool:
        return (
            self.processing == 0
            and self.unpublished == 0
            and self.paid_pending == 0
            and self.texted == self.committed == self.audited
        )

    def __str__(self) -> str:
        return (
            f"processing={self.processing} unpublished={self.unpublished} "
            f"committed={self.committed} texted={self.texted} audited={self.audited} "
            f"paid_pending={self.paid_pending}"
        )


async def progress(reader: Reader, paid: Set[str]) -> Progress:
    # The pending fundings first: one credited after this read is counted
    # pending here, and one credited before it has its event in the counts.
    pending = {str(reference) for (reference,) in await reader.rows(PENDING_FUNDINGS_QUERY)}
    ((processing, unpublished, committed, texted, audited),) = await reader.rows(PROGRESS_QUERY)
    return Progress(
        int(processing),
        int(unpublished),
        int(committed),
        int(texted),
        int(audited),
        len(pending & paid),
    )


WALLET_QUERY = """
SELECT w.id, w.balance_minor, COALESCE(SUM(l.amount_minor), 0)
FROM wallets w LEFT JOIN ledger_entries l ON l.wallet_id = w.id
GROUP BY w.id, w.balance_minor
"""
BILL_LEDGER_QUERY = """
SELECT b.id, b.status, b.amount_minor,
       COALESCE(SUM(CASE WHEN l.kind = 'debit' THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN l.kind = 'refund' THEN 1 ELSE 0 END), 0),
       COALESCE(SUM(l.amount_minor), 0)
FROM bills b LEFT JOIN ledger_entries l ON l.bill_id = b.id
GROUP BY b.id, b.status, b.amount_minor
"""
STUCK_QUERY = """
SELECT id, meter_number, processing_since, vend_request_id FROM bills
WHERE status = 'processing' ORDER BY processing_since
"""
SHARED_TOKEN_QUERY = """
SELECT token, id, meter_number, status, paid_at, receipt_number, vend_request_id FROM bills
WHERE token IN (SELECT token FROM bills WHERE token IS NOT NULL GROUP BY token HAVING COUNT(*) > 1)
ORDER BY token, paid_at
"""
BILL_STATUS_QUERY = "SELECT status, COUNT(*) FROM bills GROUP BY status ORDER BY status"
NOTIFICATION_STATUS_QUERY = (
    "SELECT status, COUNT(*) FROM notifications GROUP BY status ORDER BY status"
)
# A notification attempted more than once was taken over after a crash or a failed send.
ATTEMPTS_QUERY = "SELECT attempts, COUNT(*) FROM notifications GROUP BY attempts ORDER BY 1"
EVENT_TYPES_QUERY = "SELECT event_type, COUNT(*) FROM outbox GROUP BY event_type ORDER BY 1"
# A stored text holds a mark where its bill's token goes (the token is kept in
# the bill only): the text as sent fills it, grouped as the API shows tokens.
_SENT_BODY = """COALESCE(REPLACE(n.body, '{token}',
    SUBSTR(b.token, 1, 4) || '-' || SUBSTR(b.token, 5, 4) || '-' || SUBSTR(b.token, 9, 4)
    || '-' || SUBSTR(b.token, 13, 4) || '-' || SUBSTR(b.token, 17, 4)), n.body)"""
_WITH_BILLS = "FROM notifications n LEFT JOIN bills b ON b.id = n.token_bill_id"
SENT_QUERY = f"""SELECT n."to", {_SENT_BODY} {_WITH_BILLS} WHERE n.status = 'sent'"""
NOTIFICATION_ROWS_QUERY = f"""
SELECT n."to", {_SENT_BODY}, n.event_id, n.event_type, n.status, n.attempts,
       n.provider_message_id, n.created_at, n.sent_at, n.error
{_WITH_BILLS}
"""
NOTIFICATION_COLUMNS = (
    "event_id",
    "event_type",
    "status",
    "attempts",
    "provider_message_id",
    "created_at",
    "sent_at",
    "error",
)
UNTEXTED_QUERY = """
SELECT o.event_id, o.event_type, o.created_at, o.published_at, o.attempts, o.last_error,
       o.claimed_until, o.claimed_by,
       (SELECT COUNT(*) FROM inbox i WHERE i.event_id = o.event_id),
       n.status, n.attempts, n.claimed_until, n.claimed_by, n.error, n.created_at
FROM outbox o LEFT JOIN notifications n ON n.event_id = o.event_id
WHERE n.status IS NULL OR n.status <> 'sent'
ORDER BY o.created_at
"""
UNTEXTED_COLUMNS = (
    "event_id",
    "event_type",
    "created_at",
    "published_at",
    "publish_attempts",
    "publish_error",
    "outbox_claimed_until",
    "outbox_claimed_by",
    "in_inbox",
    "notification_status",
    "notification_attempts",
    "notification_claimed_until",
    "notification_claimed_by",
    "notification_error",
    "notification_created_at",
)
UNPUBLISHED_QUERY = """
SELECT event_id, event_type, created_at, attempts, last_error, claimed_until, claimed_by
FROM outbox WHERE published_at IS NULL ORDER BY created_at
"""
# Who holds a lease (claimed_by) is a daemon instance; its pid names the life.
INSTANCES_QUERY = """
SELECT id, pid, started_at, heartbeat_at, stopped_at FROM daemon_instances ORDER BY started_at
"""
UNAUDITED_QUERY = """
SELECT o.event_id, o.event_type, o.created_at, o.published_at FROM outbox o
WHERE NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.event_id = o.event_id)
ORDER BY o.created_at
"""
# Each funding with its credits: one ledger credit of its amount once succeeded.
FUNDING_QUERY = """
SELECT f.reference, f.status, f.amount_minor, f.checks, f.review_reason, f.created_at,
       f.settled_at, COUNT(l.id), COALESCE(SUM(l.amount_minor), 0)
FROM fundings f LEFT JOIN ledger_entries l ON l.funding_id = f.id AND l.kind = 'credit'
GROUP BY f.id, f.reference, f.status, f.amount_minor, f.checks, f.review_reason, f.created_at,
         f.settled_at
"""
FUNDING_COLUMNS = (
    "reference",
    "status",
    "amount_minor",
    "checks",
    "review_reason",
    "created_at",
    "settled_at",
    "credits",
    "credited_minor",
)
# Gateway credits that settle no funding of ours.
STRAY_CREDITS_QUERY = """
SELECT l.id, l.wallet_id, l.funding_id, l.amount_minor, l.created_at FROM ledger_entries l
WHERE l.source = 'gateway'
  AND NOT EXISTS (SELECT 1 FROM fundings f WHERE f.id = l.funding_id)
"""
STRAY_COLUMNS = ("entry_id", "wallet_id", "funding_id", "amount_minor", "created_at")
FUNDED_EVENTS_QUERY = "SELECT body FROM outbox WHERE event_type = 'wallet_funded'"
FUNDING_STATUS_QUERY = "SELECT status, COUNT(*) FROM fundings GROUP BY status ORDER BY status"
STRANGERS_QUERY = """
SELECT 'notification', n.event_id FROM notifications n
WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = n.event_id)
UNION ALL
SELECT 'audit', a.event_id FROM audit_log a
WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = a.event_id)
"""


async def _optional_rows(reader: Reader, query: str) -> list[tuple[Any, ...]] | str:
    """Rows that only explain others: a failure to read them is shown, not raised."""
    try:
        return await reader.rows(query)
    except Exception as exc:
        return f"not read: {exc!r}"


def _rows_as(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows[:DETAIL_ROWS]]


def _instances(rows: list[tuple[Any, ...]] | str) -> list[dict[str, Any]] | str:
    if isinstance(rows, str):
        return rows
    return [
        dict(zip(("id", "pid", "started", "heartbeat", "stopped"), row, strict=True))
        for row in rows
    ]


def _money_errors(
    wallets: Sequence[tuple[Any, ...]], bills: Sequence[tuple[Any, ...]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Wallets below zero or out of step with their ledger; bills whose
    ledger is not what their status says (one debit; paid: -amount; failed:
    refunded to 0; never debited: 0)."""
    overdrafts = [
        {"wallet_id": wallet, "balance_minor": int(balance), "ledger_minor": int(ledger)}
        for wallet, balance, ledger in wallets
        if int(balance) < 0 or int(balance) != int(ledger)
    ]
    double = []
    for bill, status, amount, debits, refunds, net in bills:
        expected = {
            "paid": -int(amount),
            "processing": -int(amount),
            "failed": 0,
            "pending": 0,
            "expired": 0,
        }.get(str(status))
        if int(debits) > 1 or (expected is not None and int(net) != expected):
            double.append(
                {
                    "bill_id": bill,
                    "status": status,
                    "amount_minor": int(amount),
                    "debits": int(debits),
                    "refunds": int(refunds),
                    "net_minor": int(net),
                }
            )
    return overdrafts, double


def _funding_errors(
    fundings: Sequence[tuple[Any, ...]],
    stray: Sequence[tuple[Any, ...]],
    funded_bodies: Sequence[tuple[Any, ...]],
    paid: Set[str],
) -> dict[str, Any]:
    """Credited: succeeded with exactly one ledger credit of its amount.
    Double-credited: a funding with more than one credit, a gateway credit
    of no funding, or a reference ``wallet_funded`` names twice. Uncredited:
    paid on the gateway and not credited exactly once."""
    rows = [dict(zip(FUNDING_COLUMNS, row, strict=True)) for row in fundings]
    credited = {
        str(row["reference"])
        for row in rows
        if row["status"] == "succeeded"
        and int(row["credits"]) == 1
        and int(row["credited_minor"]) == int(row["amount_minor"])
    }
    funded = Counter(json.loads(body).get("data", {}).get("reference") for (body,) in funded_bodies)
    twice = {reference: n for reference, n in funded.items() if reference and n > 1}
    double = [row for row in rows if int(row["credits"]) > 1]
    uncredited = [row for row in rows if str(row["reference"]) in paid - credited]
    return {
        "initiated": len(rows),
        "credited": len(credited),
        "double": double,
        "stray": [
            dict(
                zip(("entry_id", "wallet_id", "funding_id", "amount_minor", "at"), row, strict=True)
            )
            for row in stray
        ],
        "funded_twice": twice,
        "uncredited": uncredited,
        "unknown_paid": sorted(paid - {str(row["reference"]) for row in rows}),
        "pending": sum(row["status"] == "pending" for row in rows),
    }


def _sms_mismatch(
    twilio: Sequence[TextMessage], sent: Sequence[tuple[Any, ...]]
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(to, body) pairs Twilio got more often than notifications say were
    sent (duplicates), and the other way round (lost)."""
    texted = Counter((m.to, m.body) for m in twilio)
    recorded = Counter((str(to), str(body)) for to, body in sent)
    return texted - recorded, recorded - texted


class SmsWitness:
    """What is known of the SMS for one (to, body): the messages Twilio
    accepted (with the daemon log that recorded each one's sid, if any) and
    the notification rows that carry that text."""

    def __init__(
        self,
        twilio: Sequence[TextMessage],
        notification_rows: Sequence[tuple[Any, ...]],
        logs: Sequence[Path],
    ) -> None:
        self._twilio: dict[tuple[str, str], list[TextMessage]] = {}
        for message in twilio:
            self._twilio.setdefault((message.to, message.body), []).append(message)
        self._rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for to, body, *rest in notification_rows:
            row = dict(zip(NOTIFICATION_COLUMNS, rest, strict=True))
            self._rows.setdefault((str(to), str(body)), []).append(row)
        self._logs = logs
        self._texts: dict[Path, str] = {}

    def _logged_by(self, sid: str) -> list[str]:
        found = []
        for path in self._logs:
            if path not in self._texts:
                self._texts[path] = path.read_text(encoding="utf-8", errors="replace")
            if sid in self._texts[path]:
                found.append(path.name)
        return found

    def describe(self, to: str, body: str, **counts: int) -> dict[str, Any]:
        return {
            "to": to,
            "body": body,
            **counts,
            "twilio": [
                {"sid": m.sid, "created": m.created, "logged_by": self._logged_by(m.sid)}
                for m in self._twilio.get((to, body), [])
            ],
            "notifications": self._rows.get((to, body), []),
        }


async def measure(
    reader: Reader, twilio: Sequence[TextMessage], logs: Sequence[Path], paid: Set[str]
) -> dict[str, Any]:
    """The database's figures and, under ``details``, the rows behind each."""
    overdrafts, double = _money_errors(
        await reader.rows(WALLET_QUERY), await reader.rows(BILL_LEDGER_QUERY)
    )
    stuck = await reader.rows(STUCK_QUERY)
    shared = await reader.rows(SHARED_TOKEN_QUERY)
    state = await progress(reader, paid)
    fundings = _funding_errors(
        await reader.rows(FUNDING_QUERY),
        await reader.rows(STRAY_CREDITS_QUERY),
        await reader.rows(FUNDED_EVENTS_QUERY),
        paid,
    )
    duplicates, lost = _sms_mismatch(twilio, await reader.rows(SENT_QUERY))
    untexted = await reader.rows(UNTEXTED_QUERY)
    unaudited = await reader.rows(UNAUDITED_QUERY)
    witness = SmsWitness(twilio, await reader.rows(NOTIFICATION_ROWS_QUERY), logs)
    figures = {
        "overdrafts": len(overdrafts),
        "double_debits": len(double),
        "stuck_processing": len(stuck),
        "committed": state.committed,
        "texted": state.texted,
        "audited": state.audited,
        "unpublished": state.unpublished,
        "duplicate_sms": sum(duplicates.values()),
        "lost_sms": sum(lost.values()),
        "shared_tokens": len({row[0] for row in shared}),
        "fundings_initiated": fundings["initiated"],
        "fundings_credited": fundings["credited"],
        "fundings_double_credited": len(fundings["double"])
        + len(fundings["stray"])
        + len(fundings["funded_twice"]),
        "fundings_uncredited": len(fundings["uncredited"]) + len(fundings["unknown_paid"]),
        "fundings_pending": fundings["pending"],
    }
    details = {
        "bills": dict(await reader.rows(BILL_STATUS_QUERY)),
        "notifications": dict(await reader.rows(NOTIFICATION_STATUS_QUERY)),
        "events": dict(await reader.rows(EVENT_TYPES_QUERY)),
        "fundings": dict(await reader.rows(FUNDING_STATUS_QUERY)),
        "double_credited_fundings": fundings["double"][:DETAIL_ROWS],
        "stray_gateway_credits": fundings["stray"][:DETAIL_ROWS],
        "references_funded_twice": dict(list(fundings["funded_twice"].items())[:DETAIL_ROWS]),
        "uncredited_fundings": fundings["uncredited"][:DETAIL_ROWS],
        "paid_fundings_not_found": fundings["unknown_paid"][:DETAIL_ROWS],
        "notification_attempts": dict(await reader.rows(ATTEMPTS_QUERY)),
        "twilio_messages": len(twilio),
        "overdrafts": overdrafts[:DETAIL_ROWS],
        "double_debits": double[:DETAIL_ROWS],
        "stuck_processing": _rows_as(("bill_id", "meter", "since", "vend_request_id"), stuck),
        "shared_tokens": _rows_as(
            ("token", "bill_id", "meter", "status", "paid_at", "receipt", "vend_request_id"),
            shared,
        ),
        "untexted_events": _rows_as(UNTEXTED_COLUMNS, untexted),
        "unpublished_events": _rows_as(
            ("event_id", "event_type", "created", "attempts", "error", "claimed_until", "by"),
            await reader.rows(UNPUBLISHED_QUERY),
        ),
        "unaudited_events": _rows_as(("event_id", "event_type", "created", "published"), unaudited),
        "instances": _instances(await _optional_rows(reader, INSTANCES_QUERY)),
        "without_event": _rows_as(("table", "event_id"), await reader.rows(STRANGERS_QUERY)),
        "duplicate_sms": [
            witness.describe(to, body, extra=n)
            for (to, body), n in list(duplicates.items())[:DETAIL_ROWS]
        ],
        "lost_sms": [
            witness.describe(to, body, missing=n)
            for (to, body), n in list(lost.items())[:DETAIL_ROWS]
        ],
    }
    return {"figures": figures, "details": details}


# -- the phases -----------------------------------------------------------------


@dataclass
class Run:
    """One run's moving parts and what it has seen so far."""

    options: Options
    run_dir: Path
    fleet: Fleet
    stats: LoadStats
    paystack: PaystackThread
    webhooks: Webhooks | None = None
    timeline: list[str] = field(default_factory=list)
    kills: int = 0
    aborted: str | None = None

    def log(self, message: str) -> None:
        """Printed with the run's clock; kept with the wall clock too, which
        the daemons' log lines carry."""
        line = f"t={self.stats.at():.1f}s {message}"
        wall = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.timeline.append(f"{wall} {line}")
        say(line)


async def start_fleet(run: Run) -> None:
    """The first daemon alone (it migrates the fresh database), then the rest together."""
    fleet = run.fleet
    fleet.start(0)
    took = await fleet.wait_ready(0)
    run.log(f"daemon 0 ready on port {fleet.slots[0].port} in {took:.1f} s")
    for index in range(1, fleet.size):
        fleet.start(index)
    for index in range(1, fleet.size):
        took = await fleet.wait_ready(index)
        run.log(f"daemon {index} ready on port {fleet.slots[index].port} in {took:.1f} s")


async def strike(run: Run, index: int, rng: random.Random) -> str:
    """The held webhooks sent to daemon ``index`` just before it goes down,
    so that some arrive as it dies; said in the timeline."""
    sent = run.webhooks.strike(index) if run.webhooks is not None else 0
    if not sent:
        return ""
    await asyncio.sleep(rng.uniform(0.0, 0.05))
    return f" as {sent} webhooks arrive"


async def kill_phase(run: Run, rng: random.Random) -> None:
    """Every 3-6 s a random daemon gets SIGKILL and, a second later, its next life."""
    fleet = run.fleet
    end = time.monotonic() + run.options.duration
    while True:
        pause = rng.uniform(*KILL_PAUSE_SECONDS)
        if time.monotonic() + pause + RESTART_DELAY_SECONDS >= end:
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            return
        await asyncio.sleep(pause)
        index = rng.randrange(fleet.size)
        pid = fleet.slots[index].current.pid
        struck = await strike(run, index, rng)
        await fleet.kill(index)
        run.kills += 1
        run.log(f"kill -9 daemon {index} (pid {pid}){struck}")
        await asyncio.sleep(RESTART_DELAY_SECONDS)
        took = await fleet.restart(index)
        run.log(
            f"daemon {index} ready again (pid {fleet.slots[index].current.pid}) in {took:.1f} s"
        )


async def rolling_restart(run: Run, rng: random.Random) -> None:
    """Each daemon in turn: SIGTERM, exit 0 expected, started again and ready
    before the next one goes."""
    fleet = run.fleet
    for index in range(fleet.size):
        pid = fleet.slots[index].current.pid
        struck = await strike(run, index, rng)
        began = time.monotonic()
        code = await fleet.terminate(index)
        run.log(
            f"SIGTERM daemon {index} (pid {pid}){struck}: exit {code} "
            f"in {time.monotonic() - began:.1f} s"
        )
        took = await fleet.restart(index)
        run.log(
            f"daemon {index} ready again (pid {fleet.slots[index].current.pid}) in {took:.1f} s"
        )


async def quiet_period(run: Run, reader: Reader) -> Progress:
    """Wait, bounded, until every bill is settled, every paid funding
    settled, every webhook delivered and every event published, texted and
    audited."""
    began = time.monotonic()
    deadline = began + run.options.quiet_seconds
    webhooks = run.webhooks
    while True:
        # Before the reads: a delivery that ends during them has not been seen done.
        delivered = webhooks is None or webhooks.idle
        state = await progress(reader, run.paystack.paid)
        if (state.settled and delivered) or time.monotonic() >= deadline:
            verb = "settled" if state.settled and delivered else "not settled"
            run.log(
                f"quiet period: {verb} after {time.monotonic() - began:.1f} s: {state}"
                + ("" if delivered else " (webhooks still being delivered)")
            )
            return state
        await asyncio.sleep(0.5)


async def stop_fleet(run: Run) -> None:
    fleet = run.fleet
    running = [slot.index for slot in fleet.slots if slot.lives and slot.current.running]
    codes = await asyncio.gather(*(fleet.terminate(index) for index in running))
    run.log("SIGTERM every daemon: exits " + ", ".join(str(code) for code in codes))


async def exercise(
    run: Run, reader_for: Callable[[], contextlib.AbstractAsyncContextManager[Reader]]
) -> None:
    """Start, load, kill, roll, quiet, stop: a ChaosError in the middle ends
    the chaos early (and fails the run) but never skips the quiet period."""
    rng = random.Random(run.options.seed)
    async with aiohttp.ClientSession(
        timeout=REQUEST_TIMEOUT, connector=aiohttp.TCPConnector(limit=0)
    ) as http:
        run.webhooks = Webhooks(
            http, run.fleet, run.stats, random.Random(f"webhooks-{run.options.seed}")
        )
        load = Load(
            Transport(http, run.fleet, run.stats),
            Gateway(run.paystack, run.webhooks),
            run.options.users,
            run.options.seed,
            run.stats,
        )
        try:
            await start_fleet(run)
            load.start()
            run.log(f"load started: {run.options.users} users")
            await kill_phase(run, rng)
            await rolling_restart(run, rng)
        except ChaosError as exc:
            run.aborted = str(exc)
            run.log(f"chaos ended early: {exc}")
        finally:
            await load.stop()
            run.webhooks.release()
            run.log(f"load stopped after {run.stats.requests} requests")
        async with reader_for() as reader:
            if any(slot.lives and slot.current.running for slot in run.fleet.slots):
                await quiet_period(run, reader)
        await run.webhooks.stop()
    await stop_fleet(run)


# -- figures and verdict ------------------------------------------------------

DATABASE_FIGURES = (
    "overdrafts",
    "double_debits",
    "stuck_processing",
    "committed",
    "texted",
    "audited",
    "unpublished",
    "duplicate_sms",
    "lost_sms",
    "shared_tokens",
    "fundings_initiated",
    "fundings_credited",
    "fundings_double_credited",
    "fundings_uncredited",
    "fundings_pending",
)
ZERO_FIGURES = (
    "errors_5xx",
    "overdrafts",
    "double_debits",
    "stuck_processing",
    "duplicate_sms",
    "lost_sms",
    "shared_tokens",
    "fundings_double_credited",
    "fundings_uncredited",
    "unclean_exits",
    "restart_failures",
    "harness_errors",
)
LINE_KEYS = (
    "mode",
    "daemons",
    "seconds",
    "requests",
    "errors_5xx",
    "connection_errors",
    "kills",
    "overdrafts",
    "double_debits",
    "stuck_processing",
    "committed",
    "texted",
    "audited",
    "duplicate_sms",
    "lost_sms",
    "shared_tokens",
    "fundings_initiated",
    "fundings_paid",
    "fundings_credited",
    "fundings_double_credited",
    "fundings_uncredited",
    "fundings_pending",
    "webhooks",
    "webhooks_lost",
    "timeouts",
    "unclean_exits",
    "restart_failures",
    "harness_errors",
    "unexpected",
)


def verdict(figures: Mapping[str, Any], aborted: str | None) -> bool:
    return (
        aborted is None
        and all(figures.get(key) == 0 for key in ZERO_FIGURES)
        and figures["texted"] == figures["audited"] == figures["committed"]
        and figures["fundings_credited"] == figures["fundings_paid"]
    )


def load_figures(run: Run) -> dict[str, Any]:
    stats = run.stats
    return {
        "mode": run.options.mode,
        "daemons": run.options.daemons,
        "requests": stats.requests,
        "errors_5xx": len(stats.errors_5xx),
        "connection_errors": stats.connection_errors,
        "timeouts": stats.timeouts,
        "kills": run.kills,
        "unclean_exits": len(run.fleet.unclean_exits),
        "restart_failures": len(run.fleet.restart_failures),
        "harness_errors": len(stats.harness_errors),
        "fundings_paid": len(run.paystack.paid),
        "webhooks": stats.webhooks,
        "webhooks_lost": stats.webhook_fates["lost"],
        # 4xx answers no step of the load should get; shown, not judged.
        "unexpected": len(stats.unexpected),
    }


def load_details(run: Run) -> dict[str, Any]:
    stats = run.stats
    return {
        "options": vars(run.options),
        "aborted": run.aborted,
        "timeline": run.timeline,
        "unavailable_503": stats.unavailable_503,
        "in_progress_409": stats.in_progress_409,
        "throttled_429": stats.throttled_429,
        "abandoned_requests": stats.abandoned,
        "double_pays": stats.double_pays,
        "double_pay_two_winners": stats.double_pay_two_winners,
        "webhook_fates": dict(stats.webhook_fates),
        "webhooks_given_up": stats.webhooks_given_up,
        "outcomes": dict(sorted(stats.outcomes.items())),
        "errors_5xx": stats.errors_5xx[:DETAIL_ROWS],
        "unexpected_answers": stats.unexpected[:DETAIL_ROWS],
        "unclean_exits": run.fleet.unclean_exits,
        "restart_failures": run.fleet.restart_failures,
        "harness_errors": stats.harness_errors,
        "lives": {
            slot.index: [
                {"pid": d.pid, "exit": d.process.poll(), "log": d.stderr_path.name}
                for d in slot.lives
            ]
            for slot in run.fleet.slots
        },
    }


def figure_line(figures: Mapping[str, Any], passed: bool) -> str:
    pairs = " ".join(f"{key}={figures[key]}" for key in LINE_KEYS)
    return f"chaos: {pairs} {'PASS' if passed else 'FAIL'}"


# -- the whole run ----------------------------------------------------------------


async def chaos(options: Options, run_dir: Path, aws_url: str | None) -> tuple[bool, str]:
    """Run everything and clean up after it; (passed, the last line)."""
    began = time.monotonic()
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert main is not None

    def interrupt() -> None:
        # Once: a second signal must not cut the cleanup short.
        if not main.cancelling():
            main.cancel()

    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, interrupt)
    twilio = TwilioThread()
    paystack = PaystackThread()
    async with contextlib.AsyncExitStack() as stack:
        await twilio.start()
        stack.push_async_callback(twilio.stop)
        await paystack.start()
        stack.push_async_callback(paystack.stop)
        settings = {**DAEMON_SETTINGS, **twilio.settings(), **paystack.settings()}
        if options.mode == "postgres":
            assert aws_url is not None
            database_url = await stack.enter_async_context(scratch_database("voltpay_chaos"))
            settings |= {"VOLTPAY_DATABASE__URL": database_url, **external_aws_env(aws_url)}

            @contextlib.asynccontextmanager
            async def reader_for() -> AsyncIterator[Reader]:
                connection = await asyncpg.connect(database_url)
                try:
                    yield PostgresReader(connection)
                finally:
                    await connection.close()

        else:
            sqlite_file = run_dir / "var" / "voltpay.sqlite3"

            @contextlib.asynccontextmanager
            async def reader_for() -> AsyncIterator[Reader]:
                yield SqliteReader(sqlite_file)

        fleet = Fleet(run_dir, options.daemons, settings)
        stack.push_async_callback(fleet.cleanup)
        run = Run(options, run_dir, fleet, LoadStats(), paystack)
        say(
            f"mode={options.mode} daemons={options.daemons} users={options.users} "
            f"seed={options.seed} kills for {options.duration:g} s; run folder {run_dir}"
        )
        await exercise(run, reader_for)
        # Every daemon has stopped: nothing changes the database or texts any more.
        try:
            async with reader_for() as reader:
                measured = await measure(
                    reader, twilio.messages(), fleet.logs(), frozenset(paystack.paid)
                )
        except Exception as exc:
            traceback.print_exc()
            reason = f"the figures could not be read: {exc!r}"
            run.aborted = f"{run.aborted}; {reason}" if run.aborted else reason
            measured = {"figures": dict.fromkeys(DATABASE_FIGURES, "n/a"), "details": {}}
        figures = {**load_figures(run), **measured["figures"]}
        figures["seconds"] = round(time.monotonic() - began, 1)
        passed = verdict(figures, run.aborted)
        report = {"passed": passed, "figures": figures, "run": load_details(run), **measured}
        (run_dir / "figures.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if not passed:
            say("the end of each daemon's last log:")
            print(fleet.tails(), flush=True)
            say(f"FAIL: the run folder is {run_dir}")
            for reason in _reasons(figures, run):
                say(f"  {reason}")
    return passed, figure_line(figures, passed)


def _reasons(figures: Mapping[str, Any], run: Run) -> Iterator[str]:
    if run.aborted:
        yield f"ended early: {run.aborted}"
    for key in ZERO_FIGURES:
        if figures.get(key):
            yield f"{key}={figures[key]} (rows in figures.json)"
    if not figures["texted"] == figures["audited"] == figures["committed"]:
        yield (
            f"committed={figures['committed']} texted={figures['texted']} "
            f"audited={figures['audited']} (untexted and unaudited events in figures.json)"
        )
    if figures["fundings_credited"] != figures["fundings_paid"]:
        yield (
            f"fundings_paid={figures['fundings_paid']} "
            f"fundings_credited={figures['fundings_credited']} "
            "(uncredited fundings in figures.json)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    run_dir = Path(tempfile.mkdtemp(prefix=f"voltpay-chaos-{options.mode}-"))
    passed, line = False, "chaos: interrupted before any figure FAIL"

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        with contextlib.ExitStack() as stack:
            aws_url = stack.enter_context(moto_process()) if options.mode == "postgres" else None
            signal.signal(signal.SIGTERM, previous)
            passed, line = asyncio.run(chaos(options, run_dir, aws_url))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say(f"interrupted; the run folder is {run_dir}")
    except Exception:
        # A fault of the run itself: what it says is unknown, so it fails.
        traceback.print_exc()
        say(f"the run itself failed; the run folder is {run_dir}")
        line = "chaos: the run itself failed before its figures were read FAIL"
    finally:
        signal.signal(signal.SIGTERM, previous)
    if passed and not options.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif passed:
        say(f"run folder kept: {run_dir}")
    print(line, flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
