"""The bench's own tests, run by ``make benchtest`` and, with the product's
tiers, by ``make test``. The ceiling's tests take the product suite's
databases: SQLite per test and PostgreSQL per run."""

from tests.conftest import (  # noqa: F401 - fixtures
    database_url,
    empty_postgres_url,
    postgres_url,
    sqlite_template,
)
