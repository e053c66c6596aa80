"""Daemon instances and the leases they hold.

Every daemon run registers an instance row and refreshes its heartbeat every
``HEARTBEAT_SECONDS``. Every lease (an outbox row being published, a
notification being sent, a named piece of shared work) names the instance
that holds it, and counts only while that instance is live: not stopped, and
heard from within ``LIVENESS_SECONDS``. So when a daemon dies, another one (or
its own successor) takes its work over within the liveness window instead of
waiting out the lease; and a successor on the same machine, which can tell
that the old process is gone, takes it over at once.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from voltpay.models import sql

HEARTBEAT_SECONDS = 2.0
LIVENESS_SECONDS = 10.0
# Instance rows stay this long after they stop being heard from.
INSTANCE_RETENTION = timedelta(days=1)


def _db() -> BaseDBAsyncClient:
    conn: BaseDBAsyncClient = connections.get("default")
    return conn


@dataclass(frozen=True)
class Lease:
    """A lease to take: who holds it and for how long at most."""

    holder: uuid.UUID
    seconds: float

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


def live_cutoff(now: datetime) -> datetime:
    """A holder heard from before this moment is presumed dead."""
    return now - timedelta(seconds=LIVENESS_SECONDS)


def holder_is_live(column: str, cutoff: str) -> str:
    """SQL: the instance named in ``column`` is live, with the placeholder
    ``cutoff`` bound to ``live_cutoff(now)``."""
    return (
        f"EXISTS (SELECT 1 FROM daemon_instances i WHERE i.id = {column} "
        f"AND i.stopped_at IS NULL AND i.heartbeat_at >= {cutoff})"
    )


def lease_is_free(until: str, holder: str, now: str, cutoff: str) -> str:
    """SQL: the lease in columns ``until`` and ``holder`` may be taken: there
    is none, it ran out (placeholder ``now``), or its holder is not live
    (placeholder ``cutoff``, bound to ``live_cutoff(now)``)."""
    return f"({until} IS NULL OR {until} < {now} OR NOT {holder_is_live(holder, cutoff)})"


def machine_identity() -> str:
    """Names the process-id space this process lives in: the host name, the
    running kernel's boot id and the PID namespace. Two processes with the
    same identity can look each other up by process id; containers with the
    same host name but their own PID namespaces cannot, and do not share one."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("no-proc")
    return "/".join(parts)[:255]


def _process_is_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process: alive
    return False


async def register(instance_id: uuid.UUID, now: datetime | None = None) -> int:
    """Record this daemon run as live, and mark as stopped every earlier run
    on this machine whose process is gone; returns how many were."""
    moment = now or datetime.now(UTC)
    host = machine_identity()
    conn = _db()
    await sql.execute(
        conn,
        "INSERT INTO daemon_instances (id, host, pid, started_at, heartbeat_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        instance_id,
        host,
        os.getpid(),
        moment,
        moment,
    )
    others = await sql.rows(
        conn,
        "SELECT id, pid FROM daemon_instances WHERE host = $1 AND stopped_at IS NULL AND id <> $2",
        host,
        instance_id,
    )
    gone = [row["id"] for row in others if _process_is_gone(int(row["pid"]))]
    if not gone:
        return 0
    ids = sql.placeholders(len(gone), 2)
    return await sql.execute(
        conn,
        f"UPDATE daemon_instances SET stopped_at = $1 WHERE id IN ({ids})",
        moment,
        *gone,
    )


async def heartbeat(instance_id: uuid.UUID, now: datetime | None = None) -> None:
    moment = now or datetime.now(UTC)
    await sql.execute(
        _db(),
        "UPDATE daemon_instances SET heartbeat_at = $1 WHERE id = $2",
        moment,
        instance_id,
    )


async def stopped(instance_id: uuid.UUID, now: datetime | None = None) -> None:
    """This run is over: every lease it still holds is free at once."""
    await sql.execute(
        _db(),
        "UPDATE daemon_instances SET stopped_at = $1 WHERE id = $2",
        now or datetime.now(UTC),
        instance_id,
    )


async def is_live(instance_id: uuid.UUID, now: datetime | None = None) -> bool:
    found = await sql.rows(
        _db(),
        "SELECT 1 AS live FROM daemon_instances WHERE id = $1 AND stopped_at IS NULL "
        "AND heartbeat_at >= $2",
        instance_id,
        live_cutoff(now or datetime.now(UTC)),
    )
    return bool(found)


_TAKE = (
    "INSERT INTO leases (name, holder, claimed_until) VALUES ($1, $2, $3) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "claimed_until = excluded.claimed_until WHERE leases.holder = $4 OR "
    + lease_is_free("leases.claimed_until", "leases.holder", "$5", "$6")
    + " RETURNING name"
)


async def take(name: str, lease: Lease, now: datetime | None = None) -> bool:
    """Take the named lease, or renew it if we hold it; False while another
    live instance holds it."""
    moment = now or datetime.now(UTC)
    taken = await sql.rows(
        _db(),
        _TAKE,
        name,
        lease.holder,
        lease.until(moment),
        lease.holder,
        moment,
        live_cutoff(moment),
    )
    return bool(taken)


async def give_back(name: str, holder: uuid.UUID) -> None:
    await sql.execute(_db(), "DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)


async def purge(now: datetime | None = None) -> None:
    """Forget instances not heard from for a day and leases long run out."""
    before = (now or datetime.now(UTC)) - INSTANCE_RETENTION
    conn = _db()
    await sql.execute(conn, "DELETE FROM leases WHERE claimed_until < $1", before)
    await sql.execute(conn, "DELETE FROM daemon_instances WHERE heartbeat_at < $1", before)
