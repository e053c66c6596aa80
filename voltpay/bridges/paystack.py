"""The payment gateway port and its Paystack adapter (the Transaction API:
initialize, verify; webhooks signed with HMAC-SHA512 of the raw body).

Amounts travel in minor units (kobo for NGN), as Paystack's do. Every answer
is checked before anything is made of it: a verify answer that is not the
documented shape is the gateway being unavailable, never a success.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from voltpay.config.settings import FundingSettings

log = logging.getLogger("voltpay.gateway")
MAX_REFERENCE_LENGTH = 64


class GatewayError(Exception):
    """The gateway could not be asked, or its answer made no sense."""


class UnknownReference(GatewayError):
    """The gateway knows no transaction with this reference (yet)."""


@dataclass(frozen=True)
class Checkout:
    authorization_url: str
    access_code: str
    reference: str


@dataclass(frozen=True)
class Verification:
    """What the gateway's own verify call says of one reference."""

    reference: str
    # success, failed, abandoned, or another status still under way
    # (ongoing, pending, processing, queued).
    status: str
    amount_minor: int
    currency: str


class PaymentGateway(Protocol):
    async def initialize(
        self, *, email: str, amount_minor: int, currency: str, reference: str, callback_url: str
    ) -> Checkout: ...

    async def verify(self, reference: str) -> Verification: ...

    async def close(self) -> None: ...


def signature(secret_key: str, raw_body: bytes) -> str:
    """The hex HMAC-SHA512 of the raw body with the secret key: what
    x-paystack-signature carries."""
    return hmac.new(secret_key.encode(), raw_body, hashlib.sha512).hexdigest()


def signature_matches(secret_key: str, raw_body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the body's signature, compared in constant time."""
    if not secret_key or not header or not header.isascii():
        return False
    return hmac.compare_digest(signature(secret_key, raw_body), header.strip().lower())


class PaystackGateway:
    """Paystack's Transaction API over one aiohttp session."""

    def __init__(self, settings: FundingSettings) -> None:
        self._base = settings.gateway_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {settings.secret_key.get_secret_value()}",
            "Content-Type": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        try:
            async with self._client().request(
                method, self._base + path, json=body, headers=self._headers, allow_redirects=False
            ) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                return response.status, answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayError(f"the gateway could not be reached: {type(exc).__name__}") from None

    async def initialize(
        self, *, email: str, amount_minor: int, currency: str, reference: str, callback_url: str
    ) -> Checkout:
        status, answer = await self._call(
            "POST",
            "/transaction/initialize",
            {
                "email": email,
                "amount": str(amount_minor),
                "currency": currency,
                "reference": reference,
                "callback_url": callback_url,
            },
        )
        data = _data(status, answer)
        url, code, ref = (
            data.get("authorization_url"),
            data.get("access_code"),
            data.get("reference"),
        )
        if not ((isinstance(url, str) and url.startswith("https://")) or _loopback_http(url)):
            raise GatewayError("initialize answered without an authorization_url")
        if not isinstance(code, str) or ref != reference:
            raise GatewayError("initialize answered for another reference")
        assert isinstance(url, str)
        return Checkout(authorization_url=url[:1024], access_code=code[:128], reference=reference)

    async def verify(self, reference: str) -> Verification:
        status, answer = await self._call("GET", f"/transaction/verify/{reference}")
        if status in (400, 404) and isinstance(answer, dict) and answer.get("status") is False:
            raise UnknownReference(reference)
        data = _data(status, answer)
        amount, currency = data.get("amount"), data.get("currency")
        state, ref = data.get("status"), data.get("reference")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise GatewayError("verify answered without an amount in minor units")
        if not isinstance(currency, str) or not isinstance(state, str) or not isinstance(ref, str):
            raise GatewayError("verify answered without a status, currency or reference")
        return Verification(reference=ref, status=state, amount_minor=amount, currency=currency)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _loopback_http(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("http://127.", "http://localhost"))


def _data(status: int, answer: Any) -> dict[str, Any]:
    if not 200 <= status < 300:
        raise GatewayError(f"the gateway answered HTTP {status}")
    if not isinstance(answer, dict) or answer.get("status") is not True:
        raise GatewayError("the gateway answered without status true")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise GatewayError("the gateway answered without data")
    return data
