"""Typed settings: environment variables ``VOLTPAY_*`` (``__`` between nested
names) over an optional TOML file over the defaults below."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

# Upper bounds: past them a setting is a typo, and some would overflow a
# date or a counter at run time (a 500 on every login, say).
HOUR = 3600
DAY = 24 * HOUR
TEN_YEARS = 10 * 365 * 24 * 3600
# Published events younger than this may be published again at start-up when
# the embedded bus lost them, which reads their outbox and inbox rows: they are
# kept at least this long.
REPUBLISH_WINDOW_DAYS = 7


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message names it in one line."""


def _comma_separated(value: object) -> object:
    """A list setting written as ``a,b,c`` (environment) or as a list (TOML)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# An E.164 prefix: "+" and 1 to 15 digits, the first not 0.
_PREFIX = re.compile(r"^\+[1-9][0-9]{0,14}$")
Networks = Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode]
Prefixes = Annotated[tuple[str, ...], NoDecode]


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(default=25.0, ge=0, le=HOUR)
    # After SIGTERM, how long to keep serving with /readyz at 503 (and every
    # answer closing its connection) before the listener closes, so a load
    # balancer moves traffic away first. Part of the grace above.
    drain_delay_seconds: float = Field(default=0.0, ge=0, le=HOUR)
    # A connection that has not sent a whole request head this long after it
    # opened is closed (slow or silent clients hold no socket for long).
    header_timeout_seconds: float = Field(default=5.0, ge=0.5, le=300)
    # An idle keep-alive connection is closed after this long.
    idle_timeout_seconds: float = Field(default=15.0, ge=1, le=HOUR)
    # Open connections one client address may hold; more are closed at once.
    max_connections_per_client: int = Field(default=128, ge=1, le=100_000)
    # Requests one user (or, before logging in, one client address) may have
    # in flight at once; more answer 429 at once, so that nobody's flood
    # takes the mailboxes, the database pool or the CPU from the others.
    max_in_flight_per_user: int = Field(default=16, ge=1, le=100_000)
    max_in_flight_per_client: int = Field(default=32, ge=1, le=100_000)
    # While other users are being served, a user (or client address) with at
    # most this many requests in flight runs them at once; one with more runs
    # them one at a time, and the rest of its share waits its turn.
    max_running_per_user: int = Field(default=2, ge=1, le=100_000)
    # The proxies (CIDRs) whose X-Forwarded-For names the client address;
    # nobody else's is believed.
    trusted_proxies: Networks = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        value = _comma_separated(value)
        if isinstance(value, tuple | list):
            try:
                return tuple(ipaddress.ip_network(str(part), strict=False) for part in value)
            except ValueError as exc:
                raise ValueError(f"not a CIDR like 10.0.0.0/8: {exc}") from None
        return value

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


class OpsSettings(BaseModel):
    """The operations listener: when a port is set, /metrics and /api/agents
    are served there only (404 on the main listener)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("port", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


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

    @model_validator(mode="after")
    def _all_or_none(self) -> TwilioSettings:
        """Half a configuration would send no SMS while looking healthy."""
        given = {
            "ACCOUNT_SID": bool(self.account_sid),
            "AUTH_TOKEN": bool(self.auth_token.get_secret_value()),
            "FROM_NUMBER": bool(self.from_number),
        }
        if any(given.values()) and not all(given.values()):
            missing = ", ".join(f"VOLTPAY_TWILIO__{name}" for name, ok in given.items() if not ok)
            raise ValueError(f"set all three Twilio settings or none; missing {missing}")
        return self


class SmsSettings(BaseModel):
    """Who may receive an SMS, and how one-time codes are rationed."""

    # Registration and every SMS are refused for numbers outside these.
    allowed_prefixes: Prefixes = ("+234",)
    code_ttl_seconds: int = Field(default=600, ge=60, le=HOUR)
    # Wrong guesses that one code allows; then it is spent.
    code_max_guesses: int = Field(default=5, ge=1, le=20)
    # The least time between two codes to one number.
    code_resend_seconds: int = Field(default=60, ge=1, le=HOUR)
    codes_per_number_per_day: int = Field(default=5, ge=1, le=1000)
    codes_per_client_per_hour: int = Field(default=10, ge=1, le=100_000)
    # Every number together: the most codes the operator pays for in a day.
    codes_per_day: int = Field(default=2000, ge=1, le=10_000_000)

    @field_validator("allowed_prefixes", mode="before")
    @classmethod
    def _prefixes(cls, value: object) -> object:
        value = _comma_separated(value)
        if isinstance(value, tuple | list):
            for prefix in value:
                if not isinstance(prefix, str) or not _PREFIX.match(prefix):
                    raise ValueError(f"{prefix!r} is not an E.164 prefix like +234")
            if not value:
                raise ValueError("name at least one prefix, like +234")
        return value


class SignupSettings(BaseModel):
    # Whether SMS other than the one-time code wait for the number to be
    # verified. Unless set: true in gateway funding mode, false in sandbox
    # (Settings._signup_defaults).
    verify_phone: bool = False
    per_client_per_hour: int = Field(default=30, ge=1, le=1_000_000)


class LogSettings(BaseModel):
    format: Literal["auto", "text", "json"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AuthSettings(BaseModel):
    token_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=TEN_YEARS)
    # Failed logins within the window before attempts wait: for one account
    # from one client address, from one address over every account, and for
    # one account from everywhere.
    max_failed_logins: int = Field(default=5, ge=1, le=1000)
    max_failed_logins_per_client: int = Field(default=20, ge=1, le=100_000)
    max_failed_logins_per_account: int = Field(default=100, ge=1, le=100_000)
    failed_login_window_seconds: int = Field(default=300, ge=10, le=DAY)
    # The first wait past a limit; it doubles with each failure over it.
    login_delay_seconds: float = Field(default=30.0, ge=1, le=HOUR)
    # Password hashing: threads of its own, and how many hashes may wait for
    # one before more are refused at once (503 with Retry-After).
    hashing_threads: int = Field(default=2, ge=1, le=64)
    hashing_queue: int = Field(default=8, ge=0, le=10_000)


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


_LOOPBACK_HOSTS = frozenset({"localhost", "::1"})


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


class FundingSettings(BaseModel):
    """How money enters a wallet: ``sandbox`` (add-funds credits at once,
    marked as a sandbox credit) or ``gateway`` (a payment the gateway
    confirms, then our own verify call)."""

    mode: Literal["sandbox", "gateway"] = "sandbox"
    # The payment gateway's API (Paystack's Transaction API).
    gateway_url: str = ""
    secret_key: SecretStr = SecretStr("")
    callback_url: str = ""
    # How long a pending intent waits for its webhook before the reconciler
    # asks the gateway; then again with doubling waits up to the largest.
    reconcile_after_seconds: float = Field(default=300.0, gt=0, le=TEN_YEARS)
    reconcile_max_wait_seconds: float = Field(default=3600.0, gt=0, le=TEN_YEARS)
    reconcile_interval_seconds: float = Field(default=5.0, gt=0, le=HOUR)
    # The smallest amount the gateway charges: less is refused before any
    # intent is made (Paystack refuses under 100 minor units, "Invalid Amount
    # Sent", which no retry would change).
    minimum_amount: Decimal = Field(
        default=Decimal("1.00"), gt=0, lt=Decimal(10) ** 16, decimal_places=2
    )
    # A checkout not paid within this is expired once the gateway agrees.
    intent_ttl_seconds: int = Field(default=3600, ge=60, le=TEN_YEARS)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # The gateway asks for a customer e-mail; voltpay keeps none, so each
    # customer gets an address under this domain, made from their user id.
    customer_email_domain: str = Field(default="customers.voltpay.invalid", min_length=1)

    @field_validator("gateway_url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value.rstrip("/")
        if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
            return value.rstrip("/")
        raise ValueError("must be an https:// URL (http:// only for a loopback host)")

    @field_validator("callback_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname
        ):
            raise ValueError("must be an absolute http(s):// URL")
        return value

    def missing(self) -> str | None:
        """The first setting gateway mode needs and lacks, as its variable's name."""
        if self.mode != "gateway":
            return None
        needed = {
            "GATEWAY_URL": self.gateway_url,
            "SECRET_KEY": self.secret_key.get_secret_value(),
            "CALLBACK_URL": self.callback_url,
        }
        for name, value in needed.items():
            if not value:
                return f"VOLTPAY_FUNDING__{name}"
        return None


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
    ops: OpsSettings = OpsSettings()
    database: DatabaseSettings = DatabaseSettings()
    aws: AwsSettings = AwsSettings()
    twilio: TwilioSettings = TwilioSettings()
    sms: SmsSettings = SmsSettings()
    signup: SignupSettings = SignupSettings()
    log: LogSettings = LogSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    agents: AgentSettings = AgentSettings()
    provider: ProviderSettings = ProviderSettings()
    billing: BillingSettings = BillingSettings()
    outbox: OutboxSettings = OutboxSettings()
    events: EventSettings = EventSettings()
    systemd: SystemdSettings = SystemdSettings()
    funding: FundingSettings = FundingSettings()

    @model_validator(mode="after")
    def _signup_defaults(self) -> Settings:
        """Defaults that hang on other settings: VOLTPAY_SIGNUP__VERIFY_PHONE,
        when not set, is true in gateway funding mode (real money comes in:
        numbers are proven before they are texted) and false in sandbox."""
        if "verify_phone" not in self.signup.model_fields_set and self.funding.mode == "gateway":
            self.signup = self.signup.model_copy(update={"verify_phone": True})
        return self

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
        settings = Settings(**file_values)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None
    except SettingsError as exc:  # e.g. VOLTPAY_HTTP set to something not JSON
        raise ConfigurationError(str(exc)) from None
    check_complete(settings)
    return settings


def check_complete(settings: Settings) -> None:
    """ConfigurationError naming the first setting that the chosen modes need
    and that is empty."""
    missing = settings.funding.missing()
    if missing is not None:
        raise ConfigurationError(f"{missing}: required when VOLTPAY_FUNDING__MODE=gateway")
