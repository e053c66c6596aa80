"""Settings refuse, in one line naming the setting, what the daemon could
only refuse later, half started."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://", "name the database"),
        ("postgres://voltpay@127.0.0.1:5432/", "name the database"),
        ("postgres://voltpay@127.0.0.1:notaport/voltpay", "the port must be a number"),
        ("postgres:///voltpay", "name the host"),
        ("sqlite://", "needs the path of a file"),
        ("sqlite://:memory:", "needs the path of a file"),
    ],
)
def test_database_urls_that_name_no_database_are_refused(
    database_env: pytest.MonkeyPatch, url: str, message: str
) -> None:
    database_env.setenv("VOLTPAY_DATABASE__URL", url)
    with pytest.raises(ConfigurationError, match=f"^VOLTPAY_DATABASE__URL: .*{message}"):
        load_settings()


def test_a_socket_folder_may_stand_for_the_host(database_env: pytest.MonkeyPatch) -> None:
    url = "postgres:///voltpay?host=/var/run/postgresql"
    database_env.setenv("VOLTPAY_DATABASE__URL", url)
    assert load_settings().database.url == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Each was once accepted, then failed at run time: memory without end
        # at start-up, a 500 on every login or verify, a reconciler that
        # could never settle a bill, a limit no amount could meet.
        ("VOLTPAY_AGENTS__NOTIFICATIONS_IN_FLIGHT", "99999999999"),
        ("VOLTPAY_AUTH__TOKEN_TTL_SECONDS", "99999999999999999999"),
        ("VOLTPAY_BILLING__BILL_TTL_SECONDS", "99999999999999999"),
        ("VOLTPAY_PROVIDER__VEND_TIMEOUT_SECONDS", "inf"),
        ("VOLTPAY_HTTP__SHUTDOWN_GRACE_SECONDS", "inf"),
        ("VOLTPAY_LIMITS__MAX_AMOUNT", "0.001"),
        ("VOLTPAY_LIMITS__MAX_AMOUNT", "1e30"),
        # Shorter than the start-up republish reads back.
        ("VOLTPAY_OUTBOX__RETENTION_DAYS", "6"),
        ("VOLTPAY_OUTBOX__RETENTION_DAYS", "3651"),
        # SMS held back for hours, or a threshold no load reaches.
        ("VOLTPAY_AGENTS__YIELD_MAX_DELAY_SECONDS", "3601"),
        ("VOLTPAY_AGENTS__YIELD_MAX_DELAY_SECONDS", "-1"),
        ("VOLTPAY_AGENTS__YIELD_IN_FLIGHT", "-1"),
        ("VOLTPAY_EVENTS__SIGNING_KEY", "too-short-to-sign-with"),
    ],
)
def test_values_past_any_sensible_bound_are_refused(
    database_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    database_env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"^{name}: "):
        load_settings()


def test_a_section_that_is_not_json_is_bad_configuration(
    database_env: pytest.MonkeyPatch,
) -> None:
    database_env.setenv("VOLTPAY_HTTP", "notjson")
    with pytest.raises(ConfigurationError, match='field "http"'):
        load_settings()


def test_a_config_file_that_is_not_utf8_is_bad_configuration(
    database_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "voltpay.toml"
    config.write_bytes(b"\xff\xfe[http]\nport = 1\n")
    with pytest.raises(ConfigurationError, match=f"^config file {config}: "):
        load_settings(config)


def test_a_drain_delay_must_fit_in_the_shutdown_grace(database_env: pytest.MonkeyPatch) -> None:
    database_env.setenv("VOLTPAY_HTTP__DRAIN_DELAY_SECONDS", "25")
    with pytest.raises(ConfigurationError, match=r"^VOLTPAY_HTTP__DRAIN_DELAY_SECONDS: .*25 s"):
        load_settings()
    database_env.setenv("VOLTPAY_HTTP__SHUTDOWN_GRACE_SECONDS", "40")
    assert load_settings().http.drain_delay_seconds == 25
