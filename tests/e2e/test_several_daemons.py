"""Three daemons on one PostgreSQL database and one SNS/SQS endpoint (moto's
server in a process of its own), as several machines behind a load balancer
run them: they start at once on an empty database, share one wallet without
overdraft, and publish, text and audit each event once, whichever daemon
wrote it and whichever daemon receives it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import asyncpg
import pytest

from tests.client import Api, eventually
from tests.e2e.conftest import (
    DaemonProcess,
    Daemons,
    external_aws_env,
    ledger_sum,
    run_cli,
    start_several,
    wait_all_ready,
)
from voltpay.models.database import MIGRATION_LOCK_KEY

DAEMONS = 3
BILL_AMOUNT = Decimal("25.00")
BILLS = 200
AFFORDABLE_BILLS = 120
MIGRATIONS = {
    path.stem
    for path in (Path(__file__).resolve().parents[2] / "voltpay/models/migrations").glob("0*.py")
}


@dataclass
class Cluster:
    """The daemons, their shared settings, and where to look behind them."""

    daemons: list[DaemonProcess]
    env: dict[str, str]
    database_url: str
    aws_url: str


@pytest.fixture
def shared_env(pg_database: str, separate_aws_url: str) -> dict[str, str]:
    """One database, one endpoint, one topic and queue pair: the same for every
    daemon. One user's bills all go at once: the money across daemons is what
    is tested, not the front door's share per user, which is lifted."""
    return {
        "VOLTPAY_DATABASE__URL": pg_database,
        **external_aws_env(separate_aws_url),
        "VOLTPAY_HTTP__MAX_IN_FLIGHT_PER_USER": str(BILLS),
    }


@pytest.fixture
async def cluster(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    shared_env: dict[str, str],
    pg_database: str,
    separate_aws_url: str,
) -> Cluster:
    started = start_several(daemons, DAEMONS, shared_env)
    await wait_all_ready(http, started)
    return Cluster(started, shared_env, pg_database, separate_aws_url)


# -- looking behind the API ----------------------------------------------------


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


@asynccontextmanager
async def aws_client(service: str, url: str) -> AsyncIterator[Any]:
    session = aioboto3.Session()
    async with session.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        yield client


@dataclass
class AwsResources:
    topic_arns: list[str]
    queue_urls: list[str]
    dead_letter_queue_urls: list[str]
    subscriptions: list[dict[str, Any]]


async def aws_resources(url: str, env: dict[str, str]) -> AwsResources:
    """What exists under the names ``env`` gives, as a fresh client sees it."""
    topic_name = env["VOLTPAY_AWS__TOPIC_NAME"]
    async with aws_client("sns", url) as sns, aws_client("sqs", url) as sqs:
        topic_arns: list[str] = []
        request: dict[str, str] = {}
        while True:
            page = await sns.list_topics(**request)
            topic_arns += [
                t["TopicArn"] for t in page["Topics"] if t["TopicArn"].endswith(":" + topic_name)
            ]
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]

        async def queues(name: str) -> list[str]:
            listed = await sqs.list_queues(QueueNamePrefix=name)
            return [u for u in listed.get("QueueUrls", []) if u.rsplit("/", 1)[-1] == name]

        subscriptions: list[dict[str, Any]] = []
        for topic_arn in topic_arns:
            listed = await sns.list_subscriptions_by_topic(TopicArn=topic_arn)
            for subscription in listed["Subscriptions"]:
                attributes = await sns.get_subscription_attributes(
                    SubscriptionArn=subscription["SubscriptionArn"]
                )
                subscriptions.append({**subscription, **attributes["Attributes"]})
        return AwsResources(
            topic_arns,
            await queues(env["VOLTPAY_AWS__QUEUE_NAME"]),
            await queues(env["VOLTPAY_AWS__DEAD_LETTER_QUEUE_NAME"]),
            subscriptions,
        )


async def queue_arn(url: str, queue_url: str) -> str:
    async with aws_client("sqs", url) as sqs:
        got = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(got["Attributes"]["QueueArn"])


async def metric(http: aiohttp.ClientSession, daemon: DaemonProcess, name: str) -> float:
    """An unlabelled counter from the daemon's /metrics (0 when absent)."""
    async with http.get(daemon.base_url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def metric_sum(http: aiohttp.ClientSession, cluster: Cluster, name: str) -> float:
    return sum(await asyncio.gather(*(metric(http, d, name) for d in cluster.daemons)))


def texted_event_ids(cluster: Cluster) -> Counter[str]:
    """How often each event id was texted, from the log sender's lines in every
    daemon's JSON log."""
    texted: Counter[str] = Counter()
    for daemon in cluster.daemons:
        for line in daemon.stderr().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            message = str(record.get("message", "")) if isinstance(record, dict) else ""
            if message.startswith("sms to="):
                key = re.search(r" key=(\S+)", message)
                assert key, message
                texted[key.group(1)] += 1
    return texted


# -- load ----------------------------------------------------------------------


async def user_on_every_daemon(http: aiohttp.ClientSession, cluster: Cluster) -> list[Api]:
    """One user, registered through the first daemon, with a session every daemon honours."""
    first = await Api(http, cluster.daemons[0].base_url).register_and_login()
    return [Api(http, d.base_url, first.who) for d in cluster.daemons]


def meter(index: int) -> str:
    """A valid 11-digit meter number of the simulated provider, one per bill."""
    return f"45{index:09d}"


async def verify_bills(apis: list[Api], count: int, amount: Decimal) -> list[str]:
    """``count`` bills of ``amount`` on different meters, verified across the daemons."""
    verified = await asyncio.gather(
        *(apis[i % len(apis)].verify(f"{amount}", meter(i)) for i in range(count))
    )
    return [str(bill["billId"]) for bill in verified]


async def pay_all(apis: list[Api], bill_ids: list[str]) -> dict[str, int]:
    """Every bill paid at once, bill i through daemon i mod 3; the status of each."""

    async def pay(index: int, bill_id: str) -> tuple[str, int]:
        api = apis[index % len(apis)]
        return bill_id, (await api.pay(api.me, bill_id)).status

    return dict(await asyncio.gather(*(pay(i, b) for i, b in enumerate(bill_ids))))


@dataclass
class Spent:
    apis: list[Api]
    statuses: dict[str, int]
    funds: Decimal


async def spend_beyond_the_balance(http: aiohttp.ClientSession, cluster: Cluster) -> Spent:
    """BILLS bills of one wallet paid at once over all daemons, with money for
    AFFORDABLE_BILLS of them."""
    apis = await user_on_every_daemon(http, cluster)
    funds = BILL_AMOUNT * AFFORDABLE_BILLS
    await apis[0].add_funds(f"{funds}")
    bill_ids = await verify_bills(apis, BILLS, BILL_AMOUNT)
    assert len(set(bill_ids)) == BILLS
    return Spent(apis, await pay_all(apis, bill_ids), funds)


# -- the tests -----------------------------------------------------------------


async def test_three_daemons_start_at_once_on_an_empty_database(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    shared_env: dict[str, str],
    pg_database: str,
    separate_aws_url: str,
) -> None:
    # Started back to back, they reach their migrations and provisioning
    # together: unserialized, all but one of them can exit 1 on "already exists".
    started = start_several(daemons, DAEMONS, shared_env)
    await wait_all_ready(http, started)

    applied = await fetch(
        pg_database, "SELECT name, count(*) AS times FROM tortoise_migrations GROUP BY name"
    )
    assert {row["name"] for row in applied} == MIGRATIONS
    assert all(row["times"] == 1 for row in applied), applied
    held = await fetch(
        pg_database,
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    assert held[0]["n"] == 0, "the migration lock is released once start-up is over"

    found = await aws_resources(separate_aws_url, shared_env)
    assert len(found.topic_arns) == 1
    assert len(found.queue_urls) == 1
    assert len(found.dead_letter_queue_urls) == 1
    assert len(found.subscriptions) == 1, found.subscriptions
    subscription = found.subscriptions[0]
    assert subscription["Protocol"] == "sqs"
    assert subscription["Endpoint"] == await queue_arn(separate_aws_url, found.queue_urls[0])
    assert subscription["RawMessageDelivery"] == "true"
    for daemon in started:
        assert "duplicate subscription" not in daemon.stderr()


async def test_three_daemons_start_at_once_on_a_new_sqlite_file(
    daemons: Daemons, http: aiohttp.ClientSession, separate_aws_url: str, tmp_path: Path
) -> None:
    """Daemons of one machine sharing a SQLite file (and an outside bus):
    SQLite's locks serialize statements, not a migration's check and apply,
    and started at once all but one exited 1 on "already exists"."""
    path = tmp_path / "shared" / "voltpay.sqlite3"
    env = {"VOLTPAY_DATABASE__URL": f"sqlite://{path}", **external_aws_env(separate_aws_url)}
    started = start_several(daemons, DAEMONS, env)
    await wait_all_ready(http, started)

    with sqlite3.connect(path) as db:
        applied = db.execute(
            "SELECT name, count(*) FROM tortoise_migrations GROUP BY name"
        ).fetchall()
    assert {name for name, _ in applied} == MIGRATIONS
    assert all(times == 1 for _, times in applied), applied
    api = await Api(http, started[1].base_url).register_and_login()
    await api.add_funds("10.00")
    assert await Api(http, started[2].base_url, api.me).balance() == "10.00"


async def test_bootstraps_at_once_agree_with_the_running_daemons(
    cluster: Cluster, tmp_path: Path
) -> None:
    runs = await asyncio.gather(
        *(
            asyncio.to_thread(run_cli, ["aws", "bootstrap"], cluster.env, cwd=tmp_path)
            for _ in range(DAEMONS)
        )
    )
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert len({run.stdout for run in runs}) == 1, [run.stdout for run in runs]
    printed = dict(line.split("=", 1) for line in runs[0].stdout.splitlines())
    found = await aws_resources(cluster.aws_url, cluster.env)
    assert found.topic_arns == [printed["VOLTPAY_AWS__TOPIC_ARN"]]
    assert found.queue_urls == [printed["VOLTPAY_AWS__QUEUE_URL"]]
    assert found.dead_letter_queue_urls == [printed["VOLTPAY_AWS__DEAD_LETTER_QUEUE_URL"]]
    assert len(found.subscriptions) == 1, found.subscriptions


async def test_concurrent_pays_over_three_daemons_never_overdraw(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    spent = await spend_beyond_the_balance(http, cluster)
    statuses = spent.statuses
    assert set(statuses.values()) <= {200, 402}, Counter(statuses.values())
    paid = {bill for bill, status in statuses.items() if status == 200}
    refused = {bill for bill, status in statuses.items() if status == 402}
    assert len(paid) + len(refused) == BILLS
    # The money covers exactly AFFORDABLE_BILLS, no vend fails, so every one
    # of those is paid and every other refused.
    assert len(paid) == AFFORDABLE_BILLS

    # The API's view, from every daemon.
    left = spent.funds - BILL_AMOUNT * len(paid)
    for api in spent.apis:
        assert Decimal(await api.balance()) == left
    assert left >= 0
    transactions = await spent.apis[1].transactions()
    assert ledger_sum(transactions) == left
    debits = Counter(t["billId"] for t in transactions if t["kind"] == "debit")
    assert set(debits) == paid and set(debits.values()) == {1}
    assert not [t for t in transactions if t["kind"] == "refund"]

    # The database's.
    wallet_id = uuid.UUID(spent.apis[0].me.wallet_id)
    wallet = await fetch(
        cluster.database_url,
        "SELECT w.balance_minor, (SELECT sum(amount_minor) FROM ledger_entries e "
        "WHERE e.wallet_id = w.id) AS ledger FROM wallets w WHERE w.id = $1",
        wallet_id,
    )
    assert wallet[0]["balance_minor"] == wallet[0]["ledger"] == int(left * 100)
    debited = await fetch(
        cluster.database_url,
        "SELECT bill_id, count(*) AS times, sum(amount_minor) AS minor FROM ledger_entries "
        "WHERE wallet_id = $1 AND kind = 'debit' GROUP BY bill_id",
        wallet_id,
    )
    assert {str(row["bill_id"]) for row in debited} == paid
    assert all(row["times"] == 1 for row in debited)
    assert -sum(row["minor"] for row in debited) == len(paid) * int(BILL_AMOUNT * 100)
    bills = await fetch(
        cluster.database_url,
        "SELECT id, status FROM bills WHERE user_id = $1",
        uuid.UUID(spent.apis[0].me.user_id),
    )
    assert {str(row["id"]) for row in bills if row["status"] == "paid"} == paid
    assert {str(row["id"]) for row in bills if row["status"] == "pending"} == refused


async def test_one_bill_paid_through_every_daemon_at_once_debits_once(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    apis = await user_on_every_daemon(http, cluster)
    await apis[0].add_funds("100.00")
    bill_id = (await apis[2].verify(f"{BILL_AMOUNT}", meter(0)))["billId"]

    attempts = await asyncio.gather(*(api.pay(api.me, bill_id) for api in apis * 3))
    statuses = Counter(attempt.status for attempt in attempts)
    assert statuses == {200: 1, 409: len(attempts) - 1}, statuses
    for api in apis:
        assert await api.balance() == "75.00"
    debits = await fetch(
        cluster.database_url,
        "SELECT count(*) AS n FROM ledger_entries WHERE bill_id = $1 AND kind = 'debit'",
        uuid.UUID(bill_id),
    )
    assert debits[0]["n"] == 1
    assert (await apis[1].get_bill(bill_id))["status"] == "paid"


async def test_every_event_is_published_texted_and_audited_once(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    await spend_beyond_the_balance(http, cluster)
    url = cluster.database_url

    async def all_delivered() -> int | None:
        """The number of events, once every one is published, texted and audited."""
        rows = await fetch(
            url,
            "SELECT (SELECT count(*) FROM outbox) AS events, "
            "(SELECT count(*) FROM outbox WHERE published_at IS NULL) AS waiting, "
            "(SELECT count(*) FROM notifications WHERE status = 'sent') AS sent, "
            "(SELECT count(*) FROM audit_log) AS audited",
        )
        counts = rows[0]
        done = counts["waiting"] == 0 and counts["events"] == counts["sent"] == counts["audited"]
        return int(counts["events"]) if done else None

    events = await eventually(
        all_delivered, timeout=30, interval=0.25, what="every event texted and audited"
    )
    # A registration, a credit, BILLS bills and AFFORDABLE_BILLS payments.
    assert events == 2 + BILLS + AFFORDABLE_BILLS

    event_ids = {str(row["event_id"]) for row in await fetch(url, "SELECT event_id FROM outbox")}
    audited = await fetch(url, "SELECT event_id FROM audit_log")
    assert {str(row["event_id"]) for row in audited} == event_ids
    sent = await fetch(url, "SELECT event_id FROM notifications WHERE status = 'sent'")
    assert {str(row["event_id"]) for row in sent} == event_ids

    # Published once: no relay published a row another relay held.
    assert await metric_sum(http, cluster, "voltpay_outbox_published_total") == events
    # Texted once: each event id in exactly one SMS line over all the logs.
    texted = texted_event_ids(cluster)
    assert set(texted) == event_ids
    assert [key for key, times in texted.items() if times > 1] == []


async def test_each_daemon_receives_a_share_of_the_events(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    # Competing consumers: whichever daemon polls first takes the next batch,
    # so with a few hundred events every poller takes some.
    apis = await user_on_every_daemon(http, cluster)
    await apis[0].add_funds("1000.00")
    bills = await verify_bills(apis, 150, BILL_AMOUNT)
    events = 2 + len(bills)

    async def every_event_received() -> bool:
        received = await metric_sum(http, cluster, "voltpay_sqs_received_total")
        return received >= events

    await eventually(every_event_received, timeout=30, interval=0.25, what="every event received")
    per_daemon = [
        await metric(http, daemon, "voltpay_sqs_received_total") for daemon in cluster.daemons
    ]
    assert all(received > 0 for received in per_daemon), per_daemon


async def test_sigterm_while_another_daemon_migrates_stops_it_at_once(
    daemons: Daemons, http: aiohttp.ClientSession, shared_env: dict[str, str], pg_database: str
) -> None:
    holder = await asyncpg.connect(pg_database)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        daemon = daemons.start(shared_env)

        async def waiting_on_the_lock() -> bool:
            assert daemon.running, daemon.describe()
            rows = await fetch(
                pg_database,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_lock%'",
            )
            return bool(rows[0]["n"])

        await eventually(waiting_on_the_lock, timeout=20, what="the daemon waiting on the lock")
        daemon.send(signal.SIGTERM)
        # Well before the lock wait would have ended on its own.
        assert await daemon.wait_exit(10) == 0, daemon.describe()
        assert "SIGTERM received" in daemon.stderr()
        applied = await fetch(
            pg_database,
            "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'tortoise_migrations'",
        )
        assert applied[0]["n"] == 0, "nothing migrated without the lock"
    finally:
        await holder.close()
