"""Typed settings: environment variables ``VOLTPAY_*`` (``__`` between nested
names) over an optional TOML file over the defaults below."""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

# Upper bounds: past them a setting is a typo, and some would overflow a
# date or a counter at run time (a 500 on every login, say).
HOUR = 3600
TEN_YEARS = 10 * 365 * 24 * 3600
# Published events younger than this may be published again at start-up when
# the embedded bus lost them, which reads their outbox and inbox rows: they are
# kept at least this long.
REPUBLISH_WINDOW_DAYS = 7


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message names it in one line."""


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(default=25.0, ge=0, le=HOUR)
    # After SIGTERM, how long to keep serving with /readyz at 503 (and every
    # answer closing its connection) before the listener closes, so a load
    # balancer moves traffic away first. Part of the grace above.
    drain_delay_seconds: float = Field(default=0.0, ge=0, le=HOUR)

    @field_validator("drain_delay_seconds")
    @classmethod
    def _within_the_grace(cls, value: float, info: ValidationInfo) -> float:
        grace = info.data.get("shutdown_grace_seconds")
        if grace is not None and value >= grace:  # else the grace's own error is reported
            raise ValueError(
                f"must be less than the shutdown grace, {grace:g} s "
                "(VOLTPAY_HTTP__SHUTDOWN_GRACE_SECONDS), which it is part of"
            )
        return value


class DatabaseSettings(BaseModel):
    # Before ``url``, whose check reads it.
    pool_max_size: int = Field(default=20, ge=1)
    url: str = "sqlite://var/voltpay.sqlite3"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("sqlite://"):
            if sqlite_path(value) is None:
                # In memory, each connection (the migrations', the daemon's)
                # would see a database of its own.
                raise ValueError("sqlite:// needs the path of a file")
            return value
        if not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with sqlite:// or postgres://")
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("the port must be a number") from None
        if not parts.path.strip("/"):
            raise ValueError("name the database: postgres://user@host:5432/DATABASE")
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("name the host: postgres://user@HOST:5432/database")
        if "pool_max_size" in info.data:  # else that setting's own error is reported
            _check_pool_sizes(parts.query, info.data["pool_max_size"])
        return value


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite://`` URL; None for another scheme, no path or
    ``:memory:``."""
    if not url.startswith("sqlite://"):
        return None
    rest = url[len("sqlite://") :].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def _check_pool_sizes(url_query: str, pool_max_size: int) -> None:
    """A PostgreSQL URL may size the pool itself (``?minsize=&maxsize=``, which
    win over ``pool_max_size``): refuse sizes the pool would refuse only once
    the daemon is starting."""
    query = parse_qs(url_query)
    sizes: dict[str, int] = {}
    for name in ("minsize", "maxsize"):
        if name in query:
            try:
                sizes[name] = int(query[name][-1])
            except ValueError:
                raise ValueError(f"{name} must be a whole number") from None
    largest = sizes.get("maxsize", pool_max_size)
    if largest < 1:
        raise ValueError("maxsize must be at least 1")
    smallest = sizes.get("minsize", 1)
    if not 0 <= smallest <= largest:
        source = "its maxsize" if "maxsize" in sizes else "VOLTPAY_DATABASE__POOL_MAX_SIZE"
        raise ValueError(
            f"minsize={smallest} must be between 0 and the pool's largest size, "
            f"{largest} ({source})"
        )


class AwsSettings(BaseModel):
    endpoint_url: str = ""
    embedded: bool = True
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: SecretStr = SecretStr("")
    topic_arn: str = ""
    queue_url: str = ""
    dead_letter_queue_url: str = ""
    topic_name: str = "voltpay-events"
    queue_name: str = "voltpay-notifications"
    dead_letter_queue_name: str = "voltpay-notifications-dlq"
    max_receive_count: int = Field(default=5, ge=1, le=1000)
    visibility_timeout_seconds: int = Field(default=30, ge=1, le=43200)
    wait_time_seconds: int = Field(default=20, ge=0, le=20)

    @property
    def uses_embedded_endpoint(self) -> bool:
        return not self.endpoint_url and self.embedded


class TwilioSettings(BaseModel):
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    # Only for tests and proxies: where the Twilio REST API lives.
    base_url: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token.get_secret_value() and self.from_number)


class LogSettings(BaseModel):
    format: Literal["auto", "text", "json"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AuthSettings(BaseModel):
    token_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=TEN_YEARS)
    max_failed_logins: int = Field(default=5, ge=1)
    failed_login_window_seconds: int = Field(default=300, ge=1, le=TEN_YEARS)


class LimitsSettings(BaseModel):
    max_amount: Decimal = Field(
        default=Decimal("1000000.00"), ge=Decimal("0.01"), lt=Decimal(10) ** 16, decimal_places=2
    )
    currency: str = Field(default="NGN", pattern=r"^[A-Z]{3}$")
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=TEN_YEARS)


class AgentSettings(BaseModel):
    mailbox_size: int = Field(default=1000, ge=1, le=1_000_000)
    bills_concurrency: int = Field(default=32, ge=1, le=10_000)
    wallets_concurrency: int = Field(default=16, ge=1, le=10_000)
    notifications_in_flight: int = Field(default=100, ge=1, le=10_000)
    # While events keep being committed, the outbox relay and the SQS poller
    # each take at most factor x that rate plus the floor (events a second),
    # so that a backlog drains in the API's spare time; with nothing being
    # committed they run at full speed.
    drain_pace_factor: float = Field(default=1.1, ge=1.0)
    drain_pace_floor: float = Field(default=50.0, gt=0)
    # Payments first: while at least yield_in_flight API requests are in
    # flight and the daemon's CPU is busy, the outbox relay publishes only
    # the floor's events a second, unless the oldest event waiting has waited
    # yield_max_delay_seconds. 0 (either) turns yielding off.
    yield_in_flight: int = Field(default=8, ge=0, le=1_000_000)
    yield_max_delay_seconds: float = Field(default=30.0, ge=0, le=3600)


class ProviderSettings(BaseModel):
    """The simulated electricity provider (the default vending backend)."""

    tariff_per_kwh: Decimal = Field(default=Decimal("68.00"), gt=0)
    minimum_amount: Decimal = Field(default=Decimal("10.00"), gt=0)
    maximum_amount: Decimal = Field(default=Decimal("500000.00"), gt=0)
    vend_timeout_seconds: float = Field(default=10.0, gt=0, le=HOUR)
    # Where the simulation keeps its vends and token identifiers: the database
    # every daemon shares (as a real provider keeps them outside the daemons),
    # or this process's memory, which one daemon alone may use and which is
    # forgotten at exit (the bench measures voltpay without the stand-in's
    # bookkeeping so).
    state: Literal["database", "memory"] = "database"
    # For tests only: all zero by default.
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    latency_seconds: float = Field(default=0.0, ge=0, le=HOUR)
    unavailable: bool = False


class BillingSettings(BaseModel):
    bill_ttl_seconds: int = Field(default=30 * 60, ge=1, le=TEN_YEARS)
    reconcile_interval_seconds: float = Field(default=5.0, gt=0)


class OutboxSettings(BaseModel):
    relay_interval_seconds: float = Field(default=1.0, gt=0, le=HOUR)
    batch_size: int = Field(default=10, ge=1, le=10)
    max_backoff_seconds: float = Field(default=60.0, gt=0, le=HOUR)
    # Published outbox rows and inbox rows are deleted this many days after
    # publishing and receipt. 14: the longest an SQS queue keeps a message.
    retention_days: int = Field(default=14, ge=REPUBLISH_WINDOW_DAYS, le=3650)


class EventSettings(BaseModel):
    # The key the outbox relay signs events with (at least 32 characters, the
    # same on every daemon). Empty: a key made at the first start and kept
    # in the database. Events signed with that key still verify once one is
    # given here.
    signing_key: SecretStr = SecretStr("")

    @field_validator("signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 characters (e.g. openssl rand -hex 32)")
        return value


class SystemdSettings(BaseModel):
    enabled: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOLTPAY_",
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
    )

    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    aws: AwsSettings = AwsSettings()
    twilio: TwilioSettings = TwilioSettings()
    log: LogSettings = LogSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    agents: AgentSettings = AgentSettings()
    provider: ProviderSettings = ProviderSettings()
    billing: BillingSettings = BillingSettings()
    outbox: OutboxSettings = OutboxSettings()
    events: EventSettings = EventSettings()
    systemd: SystemdSettings = SystemdSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the TOML file, which init_settings carries.
        return env_settings, init_settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path}: not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"config file {path}: {exc}") from None


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = "__".join(str(part) for part in first["loc"]).upper()
    return f"VOLTPAY_{location}: {first['msg']}"


def load_settings(config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Build the settings once; raise ConfigurationError naming the bad one."""
    path = config_file or os.environ.get("VOLTPAY_CONFIG") or None
    file_values = _read_toml(Path(path)) if path else {}
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None
    except SettingsError as exc:  # e.g. VOLTPAY_HTTP set to something not JSON
        raise ConfigurationError(str(exc)) from None
