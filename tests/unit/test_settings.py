"""Settings refuse, in one line naming the setting, what the daemon could
only refuse later, half started."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from voltpay.config.settings import ConfigurationError, FundingSettings, load_settings

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


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.paystack.co", True),
        ("http://127.0.0.1:8123", True),
        ("http://localhost:8123/", True),
        ("http://api.paystack.co", False),
        ("ftp://api.paystack.co", False),
        ("api.paystack.co", False),
    ],
)
def test_the_gateway_url_is_https_or_loopback_http(url: str, ok: bool) -> None:
    if ok:
        assert FundingSettings(gateway_url=url).gateway_url == url.rstrip("/")
    else:
        with pytest.raises(ValidationError):
            FundingSettings(gateway_url=url)


def test_gateway_mode_names_the_first_missing_setting() -> None:
    assert FundingSettings().missing() is None  # sandbox needs none
    gateway = FundingSettings(mode="gateway", gateway_url="https://api.paystack.co")
    assert gateway.missing() == "VOLTPAY_FUNDING__SECRET_KEY"
    complete = gateway.model_copy(
        update={"secret_key": SecretStr("sk"), "callback_url": "https://x.example/cb"}
    )
    assert complete.missing() is None


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"ACCOUNT_SID": "AC1"}, "VOLTPAY_TWILIO__AUTH_TOKEN, VOLTPAY_TWILIO__FROM_NUMBER"),
        ({"ACCOUNT_SID": "AC1", "AUTH_TOKEN": "secret"}, "VOLTPAY_TWILIO__FROM_NUMBER"),
        (
            {"FROM_NUMBER": "+15005550006"},
            "VOLTPAY_TWILIO__ACCOUNT_SID, VOLTPAY_TWILIO__AUTH_TOKEN",
        ),
    ],
)
def test_half_a_twilio_configuration_is_refused_naming_what_is_missing(
    database_env: pytest.MonkeyPatch, given: dict[str, str], missing: str
) -> None:
    for name, value in given.items():
        database_env.setenv(f"VOLTPAY_TWILIO__{name}", value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value).startswith("VOLTPAY_TWILIO: ")
    assert str(refused.value).endswith(f"missing {missing}")
    assert "secret" not in str(refused.value)


def test_allowed_prefixes_and_trusted_proxies_are_comma_separated(
    database_env: pytest.MonkeyPatch,
) -> None:
    assert load_settings().sms.allowed_prefixes == ("+234",)
    assert load_settings().http.trusted_proxies == ()
    database_env.setenv("VOLTPAY_SMS__ALLOWED_PREFIXES", "+234, +233")
    database_env.setenv("VOLTPAY_HTTP__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1, ::1")
    settings = load_settings()
    assert settings.sms.allowed_prefixes == ("+234", "+233")
    assert [str(n) for n in settings.http.trusted_proxies] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
    ]


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("SMS__ALLOWED_PREFIXES", "234", "is not an E.164 prefix"),
        ("SMS__ALLOWED_PREFIXES", "+", "is not an E.164 prefix"),
        ("SMS__ALLOWED_PREFIXES", ",", "name at least one prefix"),
        ("HTTP__TRUSTED_PROXIES", "10.0.0.0/33", "not a CIDR"),
        ("HTTP__TRUSTED_PROXIES", "proxy.example", "not a CIDR"),
    ],
)
def test_bad_prefixes_and_proxies_are_refused(
    database_env: pytest.MonkeyPatch, name: str, value: str, complaint: str
) -> None:
    database_env.setenv(f"VOLTPAY_{name}", value)
    with pytest.raises(ConfigurationError, match=f"^VOLTPAY_{name}: .*{complaint}"):
        load_settings()


def test_phones_are_verified_by_default_in_gateway_mode_only(
    database_env: pytest.MonkeyPatch,
) -> None:
    assert load_settings().signup.verify_phone is False
    database_env.setenv("VOLTPAY_FUNDING__MODE", "gateway")
    database_env.setenv("VOLTPAY_FUNDING__GATEWAY_URL", "https://api.paystack.co")
    database_env.setenv("VOLTPAY_FUNDING__SECRET_KEY", "sk_test_x")
    database_env.setenv("VOLTPAY_FUNDING__CALLBACK_URL", "https://pay.example/back")
    assert load_settings().signup.verify_phone is True
    database_env.setenv("VOLTPAY_SIGNUP__VERIFY_PHONE", "false")
    assert load_settings().signup.verify_phone is False
