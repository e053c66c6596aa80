"""Settings refuse, in one line naming the setting, what the daemon could
only refuse later, half started."""

from __future__ import annotations

import pytest

from voltpay.config.settings import ConfigurationError, load_settings

PG = "postgres://voltpay@127.0.0.1:5432/voltpay"


@pytest.fixture
def database_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("VOLTPAY_CONFIG", raising=False)
    monkeypatch.delenv("VOLTPAY_DATABASE__POOL_MAX_SIZE", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("url", "pool_max_size"),
    [
        (PG, None),
        (f"{PG}?minsize=20", None),
        (f"{PG}?minsize=0", None),
        (f"{PG}?minsize=30&maxsize=40", None),
        (f"{PG}?maxsize=5", None),
        (f"{PG}?minsize=8", "8"),
        ("sqlite://var/voltpay.sqlite3?minsize=99", None),
    ],
)
def test_pool_sizes_the_pool_accepts_are_accepted(
    database_env: pytest.MonkeyPatch, url: str, pool_max_size: str | None
) -> None:
    database_env.setenv("VOLTPAY_DATABASE__URL", url)
    if pool_max_size is not None:
        database_env.setenv("VOLTPAY_DATABASE__POOL_MAX_SIZE", pool_max_size)
    assert load_settings().database.url == url


@pytest.mark.parametrize(
    ("url", "pool_max_size", "message"),
    [
        (
            f"{PG}?minsize=30",
            None,
            r"minsize=30 must be between 0 and the pool's largest size, 20 "
            r"\(VOLTPAY_DATABASE__POOL_MAX_SIZE\)",
        ),
        (f"{PG}?minsize=9", "8", r"minsize=9 .* 8 \(VOLTPAY_DATABASE__POOL_MAX_SIZE\)"),
        (f"{PG}?minsize=6&maxsize=5", None, r"minsize=6 .* 5 \(its maxsize\)"),
        (f"{PG}?minsize=-1", None, "minsize=-1 must be between 0"),
        (f"{PG}?maxsize=0", None, "maxsize must be at least 1"),
        (f"{PG}?minsize=many", None, "minsize must be a whole number"),
    ],
)
def test_pool_sizes_the_pool_would_refuse_are_refused_up_front(
    database_env: pytest.MonkeyPatch, url: str, pool_max_size: str | None, message: str
) -> None:
    database_env.setenv("VOLTPAY_DATABASE__URL", url)
    if pool_max_size is not None:
        database_env.setenv("VOLTPAY_DATABASE__POOL_MAX_SIZE", pool_max_size)
    with pytest.raises(ConfigurationError, match=f"^VOLTPAY_DATABASE__URL: .*{message}"):
        load_settings()


def test_a_bad_pool_size_is_reported_as_itself(database_env: pytest.MonkeyPatch) -> None:
    database_env.setenv("VOLTPAY_DATABASE__URL", f"{PG}?minsize=4")
    database_env.setenv("VOLTPAY_DATABASE__POOL_MAX_SIZE", "0")
    with pytest.raises(ConfigurationError, match=r"^VOLTPAY_DATABASE__POOL_MAX_SIZE: "):
        load_settings()
