"""The daemon's long-lived SNS and SQS clients, opened once and closed once."""

from __future__ import annotations

import asyncio
import ipaddress
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from voltpay import __version__
from voltpay.bridges.direct import DirectCalls

if TYPE_CHECKING:
    from voltpay.bridges.embedded import BusAccess
    from voltpay.config.settings import AwsSettings

# moto and LocalStack accept any key pair; botocore still refuses to sign
# without one.
DUMMY_CREDENTIAL = "testing"

CONNECT_TIMEOUT_SECONDS = 5.0
# Must exceed the 20 s SQS long poll, or every idle poll would end in a timeout.
READ_TIMEOUT_SECONDS = 30.0
MAX_ATTEMPTS = 3
MAX_POOL_CONNECTIONS = 10  # botocore's default, per client
USER_AGENT = f"voltpay/{__version__}"  # botocore appends its own name and version

# What a call can fail with short of a bug: the endpoint refused, timed out or
# answered with an error for the whole request.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


def describe_error(exc: BaseException) -> str:
    """One line naming what went wrong, for logs and outcomes."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def client_config(*, max_attempts: int = MAX_ATTEMPTS, local: bool = False) -> AioConfig:
    # "standard" retries back off with jitter and also retry throttling and
    # transient connection errors, which "legacy" handles only in part.
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        # total_max_attempts counts the first try; botocore's "max_attempts"
        # would count only the retries.
        "retries": {"mode": "standard", "total_max_attempts": max_attempts},
        "tcp_keepalive": True,
        # Otherwise botocore rebuilds its User-Agent from a dozen components,
        # each sanitised, twice on every call.
        "user_agent": USER_AGENT,
    }
    if local:
        # An HTTP(S)_PROXY from the environment cannot reach our loopback port.
        options["proxies"] = {}
    return AioConfig(**options)


def is_local_endpoint(endpoint_url: str | None) -> bool:
    """True for an endpoint on this machine (the embedded one, a local LocalStack)."""
    if not endpoint_url:
        return False
    host = urlsplit(endpoint_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AwsClients:
    """One aioboto3 session with an SNS and an SQS client that live as long as it.

    Clients are expensive to build (botocore loads service models) and each
    owns a connection pool, so the daemon opens them once at start-up and
    closes them at shutdown; nothing creates a client per call.
    """

    def __init__(
        self,
        *,
        stack: AsyncExitStack,
        sns: DirectCalls,
        sqs: DirectCalls,
        endpoint_url: str | None,
    ):
        self._stack = stack
        self._sns = sns
        self._sqs = sqs
        self._endpoint_url = endpoint_url
        self._closed = False

    @classmethod
    async def open(
        cls,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        local_endpoint: bool | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> AwsClients:
        """Open both clients.

        Without keys, a local endpoint (``local_endpoint``, by default inferred
        from a loopback host) gets dummy keys; any other endpoint uses botocore's
        usual credential chain (environment, profile, instance role).
        """
        endpoint = endpoint_url or None
        if local_endpoint is None:
            local_endpoint = is_local_endpoint(endpoint)
        key_id = access_key_id or None
        secret = secret_access_key or None
        if local_endpoint and not (key_id and secret):
            key_id = secret = DUMMY_CREDENTIAL
        session = aioboto3.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name=region,
        )
        config = client_config(max_attempts=max_attempts, local=local_endpoint)
        stack = AsyncExitStack()
        try:
            sns = await stack.enter_async_context(
                session.client("sns", endpoint_url=endpoint, config=config)
            )
            sqs = await stack.enter_async_context(
                session.client("sqs", endpoint_url=endpoint, config=config)
            )
            credentials = await session.get_credentials()
            http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    # As many connections as the two clients' pools had.
                    connector=aiohttp.TCPConnector(limit=2 * MAX_POOL_CONNECTIONS),
                    timeout=aiohttp.ClientTimeout(
                        sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=READ_TIMEOUT_SECONDS
                    ),
                    # Like botocore: proxies from the environment, never for
                    # our own loopback endpoint.
                    trust_env=not local_endpoint,
                )
            )
        except BaseException:
            await stack.aclose()
            raise

        def direct(client: Any) -> DirectCalls:
            return DirectCalls(
                client,
                credentials=credentials,
                http=http,
                max_attempts=max_attempts,
                user_agent=USER_AGENT,
            )

        return cls(stack=stack, sns=direct(sns), sqs=direct(sqs), endpoint_url=endpoint)

    @classmethod
    async def from_settings(
        cls, settings: AwsSettings, *, embedded: BusAccess | None = None
    ) -> AwsClients:
        """Open the clients the settings describe; pass the embedded bus's
        address and key pair when ``settings.uses_embedded_endpoint``."""
        if settings.uses_embedded_endpoint:
            if embedded is None:
                raise ValueError("settings use the embedded endpoint but none was started")
            return await cls.open(
                endpoint_url=embedded.url,
                region=embedded.credentials.region,
                access_key_id=embedded.credentials.access_key_id,
                secret_access_key=embedded.credentials.secret_access_key,
                local_endpoint=True,
            )
        return await cls.open(
            endpoint_url=settings.endpoint_url or None,
            region=settings.region,
            access_key_id=settings.access_key_id or None,
            secret_access_key=settings.secret_access_key.get_secret_value() or None,
        )

    @property
    def sns(self) -> Any:
        """The SNS client."""
        return self._sns.client

    @property
    def sqs(self) -> Any:
        """The SQS client."""
        return self._sqs.client

    @property
    def sns_direct(self) -> DirectCalls:
        """SNS calls on the publishing hot path (see ``direct``)."""
        return self._sns

    @property
    def sqs_direct(self) -> DirectCalls:
        """SQS calls on the consuming hot path (see ``direct``)."""
        return self._sqs

    @property
    def endpoint_url(self) -> str | None:
        return self._endpoint_url

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stack.aclose()

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
