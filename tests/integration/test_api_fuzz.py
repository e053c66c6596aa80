"""/openapi.json is exact: schemathesis, every check in every phase, over the
document the daemon serves, as one registered and funded user (made an
operator, so that the operators' routes are reached too).

The suite runs a short budget with a fixed seed; ``make fuzz`` runs a long
one (``SEED=`` and ``SECONDS=``). A failure prints each disagreement with the
request that shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.client import Api
from tests.conftest import sqlite_copy
from tests.fuzzing import fuzz
from voltpay.http.openapi import openapi_document
from voltpay.models.users import OPERATOR, grant_role

# In sandbox mode no funding intent exists for the fuzzer to read.
NOTHING_TO_READ = {"GET /api/fundings/{fundingId}"}


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite alone: the document and the routes are the same on PostgreSQL,
    and the budget is better spent on requests."""
    return sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    """Limits a fuzzer's thousands of requests from one address would reach
    at once, which would leave the rest of the run answering 429 (each 429
    stays documented, and is accepted where it still comes)."""
    return {
        "auth": {
            "max_failed_logins": 1000,
            "max_failed_logins_per_client": 100_000,
            "max_failed_logins_per_account": 100_000,
        },
        "signup": {"per_client_per_hour": 1_000_000},
    }


async def test_the_server_does_what_its_openapi_document_says(
    api: Api, pytestconfig: pytest.Config
) -> None:
    who = await api.customer(funds="500000.00")
    assert await grant_role(who.username, OPERATOR)
    report = await asyncio.to_thread(
        fuzz,
        api.base_url,
        username=who.username,
        password=who.password,
        seed=pytestconfig.getoption("fuzz_seed"),
        seconds=pytestconfig.getoption("fuzz_seconds"),
    )
    print(report.summary())
    assert not report.errors, "\n".join(report.errors)
    assert not report.failures, "\n\n".join(map(str, report.failures))
    operations = {
        f"{method.upper()} {path}"
        for path, methods in openapi_document()["paths"].items()
        for method in methods
    }
    assert report.untested(operations) <= NOTHING_TO_READ, report.statuses
