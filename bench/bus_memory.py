"""The ``bus-memory`` part: resident memory of a daemon and of its embedded
bus's process over a long run of events.

Events go through the whole default pipeline (add-funds: one
``wallet_funded`` event each, published, received, texted to the log and
deleted). RSS of both processes is read once the first ``warm_up`` events are
all consumed and again after ``events``; the growth per event between the two
is the figure (target: under 200 bytes per event).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import rss_kib

CONCURRENCY = 8
USERS = 10
_DELETED = re.compile(r"^voltpay_sqs_deleted_total (\S+)$", re.MULTILINE)


@dataclass
class BusMemorySample:
    database: str
    events: int
    warm_up: int
    daemon_kib: list[tuple[int, int]] = field(default_factory=list)  # (events consumed, KiB)
    bus_kib: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0

    def growth_bytes_per_event(self, which: str) -> float:
        points = self.daemon_kib if which == "daemon" else self.bus_kib
        (first_events, first), (last_events, last) = points[0], points[-1]
        return (last - first) * 1024 / max(1, last_events - first_events)


def bus_pid(daemon_pid: int) -> int:
    """The daemon's one child: its embedded bus."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == daemon_pid:
            children.append(int(entry.name))
    if len(children) != 1:
        raise RuntimeError(f"expected one bus process under {daemon_pid}, found {children}")
    return children[0]


async def _consumed(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    match = _DELETED.search(text)
    return int(float(match[1])) if match else 0


async def _users(http: aiohttp.ClientSession, url: str) -> list[tuple[str, str]]:
    made = []
    for number in range(USERS):
        name = f"bus-memory-{uuid.uuid4().hex[:10]}"
        body = {
            "username": name,
            "password": "correct horse battery",
            "phoneNumber": f"+23480{number:08d}",
        }
        async with http.post(url + "/api/auth/register", json=body) as response:
            response.raise_for_status()
        async with http.post(url + "/api/auth/login", json=body) as response:
            login = await response.json()
        made.append((login["token"], login["walletId"]))
    return made


async def _add_funds(
    http: aiohttp.ClientSession, url: str, users: list[tuple[str, str]], count: int
) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(count):
        queue.put_nowait(number)

    async def worker() -> None:
        while not queue.empty():
            number = queue.get_nowait()
            token, wallet = users[number % len(users)]
            for _ in range(20):  # 503 overloaded: the API's own backpressure
                async with http.post(
                    f"{url}/api/wallets/{wallet}/add-funds",
                    json={"amount": "0.01"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    await response.read()
                    if response.status == 200:
                        break
                await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _until_consumed(http: aiohttp.ClientSession, url: str, target: int) -> int:
    while True:
        consumed = await _consumed(http, url)
        if consumed >= target:
            return consumed
        await asyncio.sleep(0.5)


async def measure(
    url: str, daemon_pid: int, *, database: str, events: int, warm_up: int
) -> BusMemorySample:
    """Send ``events`` events through the daemon at ``url`` and read RSS."""
    bus = bus_pid(daemon_pid)
    sample = BusMemorySample(database, events, warm_up)
    began = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        users = await _users(http, url)
        base = await _until_consumed(http, url, USERS)  # the welcome SMS
        sent = 0
        for mark in (warm_up, events):
            await _add_funds(http, url, users, mark - sent)
            sent = mark
            consumed = await _until_consumed(http, url, base + mark) - base
            sample.daemon_kib.append((consumed, rss_kib(daemon_pid)))
            sample.bus_kib.append((consumed, rss_kib(bus)))
    sample.seconds = time.monotonic() - began
    return sample
