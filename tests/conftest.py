"""Shared fixtures: a real PostgreSQL database per run, SQLite per test, the
SNS/SQS API over HTTP (moto's server), and the daemon in-process."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.client import Api, api_for
from tests.fakes.moto_server import moto_server_fixture
from tests.postgres import PG_ADMIN_URL, admin, scratch_database, url_of
from voltpay.bridges.electricity import SimulatedProvider
from voltpay.bridges.sms import SmsSender
from voltpay.config import Settings
from voltpay.daemon.runtime import CompositionRoot, Daemon
from voltpay.models import leases
from voltpay.models.database import apply_migrations, close_database, open_database
from voltpay.models.users import create_user

moto_server_url = moto_server_fixture()
T = TypeVar("T")
# The contract fuzzer's budget in the suite, for each funding mode; ``make
# fuzz`` gives it more.
FUZZ_SECONDS = 30
FUZZ_SEED = 20261207


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fuzz", "the contract fuzzer (tests/integration/test_api_fuzz.py)")
    group.addoption(
        "--fuzz-seconds",
        type=int,
        default=FUZZ_SECONDS,
        help="the fuzzer's time budget per funding mode",
    )
    group.addoption("--fuzz-seed", type=int, default=FUZZ_SEED, help="the fuzzer's seed")


def run_blocking(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run async set-up on a loop of its own, even when called from a test's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_factory())).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this run, migrated once, dropped at the end."""
    name = f"voltpay_test_{uuid.uuid4().hex[:12]}"
    try:
        run_blocking(lambda: admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed for these tests: {exc}")
    url = url_of(name)
    run_blocking(lambda: apply_migrations(url))
    yield url
    run_blocking(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped at teardown."""
    try:
        async with scratch_database("voltpay_scratch") as url:
            yield url
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed for this test: {exc}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "voltpay.sqlite3"
    run_blocking(lambda: apply_migrations(f"sqlite://{path}"))
    return path


def sqlite_copy(template: Path, folder: Path) -> str:
    """The URL of a fresh SQLite database in ``folder``: a copy of the migrated
    template, so no test pays for the migrations."""
    path = folder / "voltpay.sqlite3"
    shutil.copyfile(template, path)
    return f"sqlite://{path}"


async def _truncate(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'tortoise_migrations'"
        )
        names = ", ".join(f'"{row["tablename"]}"' for row in tables)
        await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """Each test runs on both: SQLite (a fresh file) and PostgreSQL (emptied)."""
    if request.param == "sqlite":
        yield sqlite_copy(sqlite_template, tmp_path)
    else:
        url: str = request.getfixturevalue("postgres_url")
        await _truncate(url)
        yield url


@pytest.fixture
async def empty_postgres_url(postgres_url: str) -> str:
    """PostgreSQL only (emptied), for what SQLite has no counterpart of."""
    await _truncate(postgres_url)
    return postgres_url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    """The migrated database alone, with no daemon (and so no relay of its own)."""
    await open_database(database_url, migrate_first=False)
    try:
        yield database_url
    finally:
        await close_database()


@pytest.fixture
async def instance(database: str) -> uuid.UUID:
    """A live daemon instance, registered in the database: the holder of the
    leases a test takes."""
    instance_id = uuid.uuid4()
    await leases.register(instance_id)
    return instance_id


async def new_user() -> tuple[uuid.UUID, uuid.UUID]:
    """A user with an empty wallet, made in the database as registration makes
    one (no HTTP): the user's id and the wallet's."""
    user, wallet, _ = await create_user(
        username=f"u{uuid.uuid4().hex[:12]}",
        password_hash="x",
        phone_number="+2348012345678",
        currency="NGN",
    )
    return user.id, wallet.id


def make_settings(database_url: str, moto_url: str, **overrides: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "port": 0, "shutdown_grace_seconds": 5},
        "database": {"url": database_url},
        "aws": {
            "endpoint_url": moto_url,
            "topic_name": f"events-{suffix}",
            "queue_name": f"notifications-{suffix}",
            "dead_letter_queue_name": f"notifications-dlq-{suffix}",
            "wait_time_seconds": 1,
            "visibility_timeout_seconds": 5,
        },
        "provider": {"vend_timeout_seconds": 2},
        "billing": {"reconcile_interval_seconds": 0.2},
        "outbox": {"relay_interval_seconds": 0.2, "max_backoff_seconds": 0.5},
        "systemd": {"enabled": False},
        "log": {"format": "text", "level": "WARNING"},
    }
    for section, fields in overrides.items():
        values.setdefault(section, {}).update(fields)
    return Settings(**values)


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider(
        tariff_minor_per_kwh=6800, minimum_amount_minor=1000, maximum_amount_minor=50_000_000
    )


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    """Override per test module or test to change the daemon's settings."""
    return {}


@pytest.fixture
def sms_sender() -> SmsSender | None:
    """None: the daemon's own choice (the log sender). Override to record."""
    return None


@asynccontextmanager
async def running_daemon(settings: Settings, **collaborators: Any) -> AsyncIterator[Daemon]:
    root = CompositionRoot(settings, **collaborators)
    try:
        yield await root.start()
    finally:
        await root.stop()


@pytest.fixture
async def daemon(
    database_url: str,
    moto_server_url: str,
    provider: SimulatedProvider,
    settings_overrides: dict[str, dict[str, Any]],
    sms_sender: SmsSender | None,
) -> AsyncIterator[Daemon]:
    settings = make_settings(database_url, moto_server_url, **settings_overrides)
    async with running_daemon(settings, provider=provider, sms_sender=sms_sender) as running:
        yield running


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[Api]:
    assert daemon.port is not None
    async with api_for(daemon.port) as client:
        yield client
