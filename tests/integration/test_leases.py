"""Leases belong to daemon instances: a lease held by an instance that
stopped, or that has not been heard from within the liveness window, is free
at once; one held by a live instance is not. On both databases, for every
kind of lease: an outbox row being published, a notification being sent, and
named work (housekeeping, reconciling a bill)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta

from tests.integration.test_pipeline import add_outbox_rows
from voltpay.models import leases
from voltpay.models import notifications as store
from voltpay.models import outbox as outbox_store
from voltpay.models.leases import LIVENESS_SECONDS, Lease
from voltpay.models.tables import DaemonInstance


async def _dead_instance() -> uuid.UUID:
    """An instance whose heartbeat is older than the liveness window."""
    instance_id = uuid.uuid4()
    await leases.register(instance_id)
    stale = datetime.now(UTC) - timedelta(seconds=LIVENESS_SECONDS + 1)
    await leases.heartbeat(instance_id, stale)
    return instance_id


async def _stopped_instance() -> uuid.UUID:
    instance_id = uuid.uuid4()
    await leases.register(instance_id)
    await leases.stopped(instance_id)
    return instance_id


async def test_outbox_rows_leased_by_a_live_instance_stay_with_it(instance: uuid.UUID) -> None:
    await add_outbox_rows(3)
    other = uuid.uuid4()
    await leases.register(other)

    assert len(await outbox_store.claim_due(10, Lease(other, 60))) == 3
    assert await outbox_store.claim_due(10, Lease(instance, 60)) == []


async def test_outbox_rows_of_a_dead_or_stopped_instance_are_taken_over_at_once(
    instance: uuid.UUID,
) -> None:
    await add_outbox_rows(4)
    dead, stopped = await _dead_instance(), await _stopped_instance()
    # Each claimed two rows for a long lease, then went away.
    assert len(await outbox_store.claim_due(2, Lease(dead, 3600))) == 2
    assert len(await outbox_store.claim_due(2, Lease(stopped, 3600))) == 2

    taken = await outbox_store.claim_due(10, Lease(instance, 60))
    assert len(taken) == 4
    assert {row.claimed_by for row in taken} == {instance}


async def test_a_notification_leased_by_a_dead_instance_is_claimed_at_once(
    instance: uuid.UUID,
) -> None:
    dead = await _dead_instance()
    event = store.Received(uuid.uuid4(), "wallet_funded", None, "credited")
    created = await store.receive([event], Lease(dead, 3600))
    notification_id = created[event.event_id].notification_id

    assert await store.claim(notification_id, Lease(instance, 60))
    # Now ours, and we are live: nobody else takes it.
    other = uuid.uuid4()
    await leases.register(other)
    assert not await store.claim(notification_id, Lease(other, 60))


async def test_a_notification_leased_by_a_live_instance_is_not_claimed(
    instance: uuid.UUID,
) -> None:
    event = store.Received(uuid.uuid4(), "wallet_funded", None, "credited")
    created = await store.receive([event], Lease(instance, 3600))
    other = uuid.uuid4()
    await leases.register(other)
    assert not await store.claim(created[event.event_id].notification_id, Lease(other, 60))


async def test_a_named_lease_is_held_by_one_live_instance_at_a_time(
    instance: uuid.UUID,
) -> None:
    other = uuid.uuid4()
    await leases.register(other)
    assert await leases.take("housekeeping", Lease(instance, 60))
    assert await leases.take("housekeeping", Lease(instance, 60))  # renewed by its holder
    assert not await leases.take("housekeeping", Lease(other, 60))
    assert await leases.take("reconcile:bill", Lease(other, 60))  # another name

    await leases.give_back("housekeeping", other)  # not the holder: nothing happens
    assert not await leases.take("housekeeping", Lease(other, 60))
    await leases.give_back("housekeeping", instance)
    assert await leases.take("housekeeping", Lease(other, 60))


async def test_a_named_lease_of_a_dead_instance_or_run_out_is_free(
    instance: uuid.UUID,
) -> None:
    dead = await _dead_instance()
    assert await leases.take("housekeeping", Lease(dead, 3600))
    assert await leases.take("housekeeping", Lease(instance, 60))

    other = uuid.uuid4()
    await leases.register(other)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    assert await leases.take("reconcile:bill", Lease(other, 60), now=long_ago)  # ran out since
    assert await leases.take("reconcile:bill", Lease(instance, 60))


async def test_an_earlier_run_on_this_machine_whose_process_is_gone_is_stopped_at_start(
    database: str,
) -> None:
    finished = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await finished.wait()
    gone_pid = finished.pid
    now = datetime.now(UTC)
    host = leases.machine_identity()
    # Two runs killed before they could say they stopped: the finished process
    # on this machine, and a run with the same process id on another machine.
    earlier, elsewhere = uuid.uuid4(), uuid.uuid4()
    for instance_id, on in ((earlier, host), (elsewhere, "another-host")):
        await DaemonInstance.create(
            id=instance_id, host=on, pid=gone_pid, started_at=now, heartbeat_at=now
        )

    assert await leases.register(uuid.uuid4()) == 1
    assert not await leases.is_live(earlier)
    assert await leases.is_live(elsewhere)
