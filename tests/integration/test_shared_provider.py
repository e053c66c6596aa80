"""The simulated provider shared by several daemons: each provider here has a
store of its own over one database, as each daemon does, and together they
behave as the one outside service they stand for."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from tortoise import connections

from voltpay.bridges.electricity import (
    REQUEST_ID_REUSED,
    SimulatedProvider,
    VendFailed,
    VendOutcomeUnknown,
    VendStatus,
)
from voltpay.domain import sts
from voltpay.domain.vending import VendRecord
from voltpay.models import sql
from voltpay.models.simulated_provider import DatabaseVendStore

NOW = datetime(2026, 11, 27, 9, 42, tzinfo=UTC)
METER = "45067812345"
AMOUNT = 10000


def daemon(**overrides: Any) -> SimulatedProvider:
    """A provider as one daemon builds it, with a store of its own over the
    shared database. Every one gets the same clock, which stands still, and
    the same seed, so anything kept per provider repeats across them."""
    options: dict[str, Any] = {
        "tariff_minor_per_kwh": 6800,
        "minimum_amount_minor": 1000,
        "maximum_amount_minor": 50_000_000,
        "rng": random.Random(7),
        "clock": lambda: NOW,
        # Blocks of 10 receipts, so that the tests' few vends take several.
        "store": DatabaseVendStore(receipt_block=10),
    }
    options.update(overrides)
    return SimulatedProvider(**options)


def daemons(count: int) -> list[SimulatedProvider]:
    return [daemon() for _ in range(count)]


class RacingStore(DatabaseVendStore):
    """Holds its first offer until every racer has made one, so that each
    has made a vend of its own before either is stored."""

    def __init__(self, racers: asyncio.Barrier) -> None:
        super().__init__()
        self._racers: asyncio.Barrier | None = racers

    async def add(self, request_id: str, record: VendRecord) -> bool:
        if self._racers is not None:
            racers, self._racers = self._racers, None
            await racers.wait()
        return await super().add(request_id, record)


async def stored_vends(request_id: str) -> int:
    found = await sql.rows(
        connections.get("default"),
        "SELECT COUNT(*) AS stored FROM simulated_vends WHERE request_id = $1",
        request_id,
    )
    return int(found[0]["stored"])


async def test_tokens_for_one_meter_stay_unique_across_daemons(database: str) -> None:
    providers = daemons(3)

    results = await asyncio.gather(
        *(providers[n % 3].vend(f"request-{n}", METER, AMOUNT) for n in range(60))
    )

    key = providers[0].decoder_key(METER)
    decoded = [sts.decode_token(result.token, key) for result in results]
    assert all(token.crc_ok for token in decoded)
    assert len({result.token for result in results}) == 60
    assert len({token.tid_minutes for token in decoded}) == 60
    assert min(token.tid_minutes for token in decoded) == sts.token_identifier(NOW)


async def test_a_vend_through_one_daemon_is_found_through_another(database: str) -> None:
    first, second = daemons(2)

    vended = await first.vend("request-1", METER, AMOUNT)
    requery = await second.requery("request-1")

    assert requery.status is VendStatus.SUCCESS
    assert requery.result is not None
    assert (requery.result.token, requery.result.units, requery.result.receipt_number) == (
        vended.token,
        vended.units,
        vended.receipt_number,
    )


async def test_one_request_id_vended_through_two_daemons_at_once_vends_once(
    database: str,
) -> None:
    racers = asyncio.Barrier(2)
    first = daemon(store=RacingStore(racers))
    # Another seed: two separate vends would differ in their receipt.
    second = daemon(store=RacingStore(racers), rng=random.Random(8))

    answers = await asyncio.gather(
        first.vend("request-1", METER, AMOUNT), second.vend("request-1", METER, AMOUNT)
    )

    assert answers[0] == answers[1]
    assert await stored_vends("request-1") == 1
    requery = await daemon().requery("request-1")
    assert requery.result == answers[0]


async def test_a_request_id_reused_through_another_daemon_is_refused(database: str) -> None:
    first, second = daemons(2)
    original = await first.vend("request-1", METER, AMOUNT)

    with pytest.raises(VendFailed) as failure:
        await second.vend("request-1", METER, AMOUNT * 2)

    assert failure.value.reason == REQUEST_ID_REUSED
    assert (await second.requery("request-1")).result == original


async def test_a_lost_answer_is_settled_by_another_daemons_requery(database: str) -> None:
    losing, asking = daemon(timeout_rate=1.0), daemon()

    with pytest.raises(VendOutcomeUnknown):
        await losing.vend("request-1", METER, AMOUNT)
    requery = await asking.requery("request-1")

    assert requery.status is VendStatus.SUCCESS
    assert requery.result is not None
    assert sts.decode_token(requery.result.token, asking.decoder_key(METER)).crc_ok
    # Vending again through the other daemon answers the vend that happened.
    assert await asking.vend("request-1", METER, AMOUNT) == requery.result


async def test_receipt_numbers_stay_unique_across_daemons(database: str) -> None:
    providers = daemons(3)

    results = await asyncio.gather(
        *(providers[n % 3].vend(f"request-{n}", f"450{n:08d}", AMOUNT) for n in range(45))
    )

    assert len({result.receipt_number for result in results}) == 45
