"""The relay's claim takes a batch off the front of a backlog without reading
the rest of it, even when PostgreSQL's statistics predate the backlog."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tests.plans import plan_nodes
from voltpay.models.leases import live_cutoff
from voltpay.models.outbox import _CLAIM

WAITING = 3000
BATCH = 50


def _rows(count: int, moment: datetime, published: bool) -> list[tuple[Any, ...]]:
    return [
        (
            uuid.uuid4(),
            "payment_completed",
            "{}",
            moment,
            moment if published else None,
            0,
            moment,
        )
        for _ in range(count)
    ]


async def test_a_claim_reads_one_batch_of_a_backlog_its_statistics_never_saw(
    empty_postgres_url: str,
) -> None:
    columns = [
        "event_id",
        "event_type",
        "body",
        "created_at",
        "published_at",
        "attempts",
        "next_attempt_at",
    ]
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    conn = await asyncpg.connect(empty_postgres_url)
    try:
        # Statistics taken while everything had gone out, as autovacuum's
        # last analyze saw the table; then a backlog builds (an SNS outage).
        await conn.copy_records_to_table(
            "outbox", records=_rows(WAITING, earlier, published=True), columns=columns
        )
        await conn.execute("ANALYZE outbox")
        await conn.copy_records_to_table(
            "outbox", records=_rows(WAITING, earlier, published=False), columns=columns
        )
        now = datetime.now(UTC)
        async with conn.transaction():  # the claim's row locks, as the relay takes them
            explained = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) "
                + _CLAIM.format(lock=" FOR UPDATE OF outbox SKIP LOCKED"),
                now + timedelta(seconds=60),
                uuid.uuid4(),
                now,
                now,
                live_cutoff(now),
                BATCH,
            )
            # EXPLAIN ANALYZE ran the claim itself.
            claimed = await conn.fetchval(
                "SELECT COUNT(*) FROM outbox WHERE claimed_until IS NOT NULL"
            )
    finally:
        await conn.close()

    assert claimed == BATCH
    plan = json.loads(explained)[0]["Plan"]
    kinds = [node["Node Type"] for node in plan_nodes(plan)]
    assert "Sort" not in kinds, kinds
    scans = [node for node in plan_nodes(plan) if node.get("Relation Name") == "outbox"]
    # The candidates' scan stops once a batch is in hand: it does not fetch
    # every waiting row to pick the first ones.
    assert max(node["Actual Rows"] for node in scans) <= BATCH, scans


async def test_the_outbox_keeps_one_publishing_index_on_both_databases(
    database_url: str,
) -> None:
    if database_url.startswith("sqlite://"):
        with sqlite3.connect(database_url[len("sqlite://") :]) as db:
            found = db.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'outbox' AND type = 'index' "
                "AND sql IS NOT NULL"
            ).fetchall()
    else:
        conn = await asyncpg.connect(database_url)
        try:
            found = await conn.fetch(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'outbox' "
                "AND indexdef NOT LIKE '%UNIQUE%'"
            )
        finally:
            await conn.close()
    definitions = [row[0].replace('"', "") for row in found]
    assert len(definitions) == 1, definitions
    assert definitions[0].endswith("(published_at, next_attempt_at)"), definitions
