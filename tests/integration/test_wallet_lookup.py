"""A user's primary wallet is found through an index, not by reading every wallet."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from tortoise import connections

from tests.plans import plan_nodes
from voltpay.models import sql, wallets
from voltpay.models.tables import User, Wallet

USERS = 2000


async def _many_users_with_a_wallet_each() -> uuid.UUID:
    start = datetime.now(UTC) - timedelta(days=1)
    users = [
        User(
            id=uuid.uuid4(),
            username=f"owner{n}",
            password_hash="x",
            phone_number="+2348000000000",
            created_at=start,
        )
        for n in range(USERS)
    ]
    await User.bulk_create(users, batch_size=500)
    await Wallet.bulk_create(
        [
            Wallet(
                id=uuid.uuid4(),
                user_id=user.id,
                currency="NGN",
                created_at=start + timedelta(seconds=n),
                updated_at=start,
            )
            for n, user in enumerate(users)
        ],
        batch_size=500,
    )
    return users[USERS // 2].id


async def test_the_primary_wallet_is_found_through_an_index(database: str) -> None:
    owner = await _many_users_with_a_wallet_each()
    query = wallets.primary_wallet_query(owner).sql(params_inline=True)
    conn = connections.get("default")
    if sql.is_sqlite(conn):
        _, found = await conn.execute_query("EXPLAIN QUERY PLAN " + query)
        steps = [str(row["detail"]) for row in found]
        assert any("USING INDEX" in step or "USING COVERING INDEX" in step for step in steps), steps
        assert not any(step.startswith("SCAN wallets") for step in steps), steps
    else:
        await conn.execute_script("ANALYZE wallets")
        explained = await conn.execute_query_dict("EXPLAIN (FORMAT JSON) " + query)
        plan = json.loads(explained[0]["QUERY PLAN"])[0]["Plan"]
        scans = [n["Node Type"] for n in plan_nodes(plan) if n.get("Relation Name") == "wallets"]
        assert scans and "Seq Scan" not in scans, scans

    assert await wallets.primary_wallet_id(owner) == (await Wallet.get(user_id=owner)).id
