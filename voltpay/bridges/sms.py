"""The SMS port: how the notifications agent texts a user.

Two adapters: Twilio (through the official client, when configured) and a log
sender for development. Errors are sorted into permanent (mark the
notification failed) and temporary (leave the SQS message for redelivery).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from voltpay.config.settings import TwilioSettings
from voltpay.domain.phones import allowed, mask

logger = logging.getLogger("voltpay.sms")
# Looking a message up: how many of a number's newest messages are read (a
# page is at most 1,000 in Twilio's list; one number may get hundreds of
# texts between an attempt and the look, a shop's phone behind many accounts
# say), and how much earlier than our clock says Twilio's clock may date it.
FIND_PAGE_SIZE = 1000
FIND_PAGES = 5
FIND_CLOCK_SLACK = timedelta(minutes=1)
_http_logger = logging.getLogger("voltpay.sms.http")


@dataclass(frozen=True)
class SmsMessage:
    to: str
    body: str
    # The event id: it ties log lines to the event. Twilio's Messages API has
    # no idempotency parameter, so it is only logged, never sent.
    idempotency_key: str
    # A one-time code's text: never written to a log, at any level.
    secret: bool = False


@dataclass(frozen=True)
class SmsReceipt:
    provider_message_id: str
    sender: str


class SmsError(Exception):
    """Sending failed; `permanent` says whether a retry could ever help."""

    permanent: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class SmsPermanentError(SmsError):
    """The provider refused the message (a 4xx other than 429): never retry."""

    permanent = True


class SmsTemporaryError(SmsError):
    """The provider could not be reached or was overloaded, retries exhausted."""

    permanent = False


class SmsSender(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> SmsReceipt: ...

    async def find(self, message: SmsMessage, since: datetime) -> SmsReceipt | None:
        """The message with this text to this number that the provider
        accepted since ``since``, if any; None when there is none or the
        provider cannot tell. Raises SmsError when the provider cannot be
        asked now."""
        ...

    async def close(self) -> None: ...


class LogSmsSender:
    """Writes each SMS to the log: the default when Twilio is not configured.
    At INFO the line names the number masked and no text; the text (which may
    hold a prepaid token) is logged at DEBUG, and a one-time code never."""

    name = "log"

    async def send(self, message: SmsMessage) -> SmsReceipt:
        message_id = f"log-{uuid.uuid4()}"
        logger.info("sms to=%s key=%s id=%s", mask(message.to), message.idempotency_key, message_id)
        if not message.secret:
            logger.debug("sms id=%s body=%r", message_id, message.body)
        return SmsReceipt(provider_message_id=message_id, sender=self.name)

    async def find(self, message: SmsMessage, since: datetime) -> SmsReceipt | None:
        """A log keeps no record to ask: after a crash between writing the
        line and recording it, the line is written again."""
        return None

    async def close(self) -> None:
        return None


class _RetryableStatus(Exception):
    """Twilio answered 429 or 5xx; raised by the transport so the Retry-After
    header, which TwilioRestException does not carry, reaches the retry loop."""

    def __init__(self, status: int, retry_after: float | None, code: int | None, detail: str):
        super().__init__(f"Twilio answered HTTP {status}: {detail}")
        self.status = status
        self.retry_after = retry_after
        self.code = code


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_fields(text: str) -> tuple[int | None, str]:
    try:
        payload = json.loads(text)
    except ValueError:
        return None, text[:200]
    if not isinstance(payload, dict):
        return None, text[:200]
    code = payload.get("code")
    message = payload.get("message") or payload.get("title") or ""
    return (code if isinstance(code, int) else None), str(message)[:200]


class _TwilioTransport(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The stock async client with four corrections.

    - base_url: every request the twilio client makes passes through here with
      its final absolute URL, after the client has applied any edge/region
      (which it reads from TWILIO_EDGE/TWILIO_REGION and which would mangle an
      IP:port host). So swapping scheme and host here is the one place that
      redirects all of them, whatever resource or domain built the URL.
    - timeout: the stock client passes timeout=None to aiohttp when the caller
      gives none, and aiohttp reads None as "no timeout at all", so the
      client's own timeout is ignored (twilio/twilio-python#925).
    - auth: the stock client wraps credentials in aiohttp.BasicAuth, which
      aiohttp 3.14 deprecates with a warning on every request; the header it
      produces is the same one built here with encode_basic_auth.
    - logging: the stock client logs about eight INFO lines per request; one
      DEBUG line each way is enough, and it never touches credentials.
    """

    def __init__(self, *, base_url: str | None, timeout_seconds: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout_seconds)
        self._base_url = urlsplit(base_url) if base_url else None

    def _rebase(self, url: str) -> str:
        if self._base_url is None:
            return url
        parts = urlsplit(url)
        base = self._base_url
        path = base.path.rstrip("/") + parts.path
        return urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        # The name and meaning are the twilio client's; it is what calls this.
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        response = await super().request(
            method,
            self._rebase(url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )
        status: int = response.status_code
        if status == 429 or status >= 500:
            code, detail = _error_fields(response.text)
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            raise _RetryableStatus(status, retry_after, code, detail)
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        _http_logger.debug("twilio request %s %s", kwargs["method"], kwargs["url"])

    def log_response(self, status_code: int, response: Any) -> None:
        _http_logger.debug("twilio response %s", status_code)


@dataclass(frozen=True)
class _Retryable:
    reason: str
    status: int | None = None
    code: int | None = None
    retry_after: float | None = None
    # A 5xx or no answer at all: Twilio may have accepted the message.
    maybe_accepted: bool = False


class TwilioSmsSender:
    """Sends through Twilio's Messages API with the official client.

    429, 5xx and transport failures are retried here with capped exponential
    backoff and jitter. A 5xx or a lost answer may come after Twilio accepted
    the message, so before such a retry the sender asks Twilio's message list
    whether it did (``find``): every SMS text ends with its event's own
    reference, so a match is that message and no other.
    """

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str | None = None,
        max_attempts: int = 4,
        base_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        if not (account_sid and auth_token and from_number):
            raise ValueError("account_sid, auth_token and from_number are all required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_backoff_seconds < 0 or max_backoff_seconds < 0:
            raise ValueError("backoff seconds must not be negative")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._from_number = from_number
        self._base_url = base_url or None
        self._max_attempts = max_attempts
        self._base_backoff = base_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._timeout = timeout_seconds
        self._transport: _TwilioTransport | None = None
        self._client: Any = None
        self._closed = False

    def _twilio_client(self) -> Any:
        # Built on first use: aiohttp refuses to create a ClientSession outside
        # a running event loop, and the session belongs to the loop it was
        # created in, while this sender may be built before the loop starts.
        if self._client is None:
            self._transport = _TwilioTransport(
                base_url=self._base_url, timeout_seconds=self._timeout
            )
            self._client = Client(self._account_sid, self._auth_token, http_client=self._transport)
        return self._client

    async def send(self, message: SmsMessage) -> SmsReceipt:
        if self._closed:
            raise SmsTemporaryError("the Twilio SMS sender is closed")
        client = self._twilio_client()
        started = datetime.now(UTC) - FIND_CLOCK_SLACK
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(client, message)
            if isinstance(outcome, SmsReceipt):
                logger.info(
                    "sms sent via twilio sid=%s to=%s key=%s attempts=%d",
                    outcome.provider_message_id,
                    mask(message.to),
                    message.idempotency_key,
                    attempt,
                )
                return outcome
            delay = self._delay_before_retry(attempt, outcome.retry_after)
            if delay is None:
                raise SmsTemporaryError(
                    f"{outcome.reason} (gave up after {attempt} attempt(s))",
                    status=outcome.status,
                    code=outcome.code,
                )
            if outcome.maybe_accepted:
                # Twilio may have taken it before failing to answer: ask first.
                accepted = await self.find(message, started)
                if accepted is not None:
                    return accepted
            logger.warning(
                "sms via twilio failed, retrying in %.2fs key=%s attempt=%d: %s",
                delay,
                message.idempotency_key,
                attempt,
                outcome.reason,
            )
            await asyncio.sleep(delay)

    async def find(self, message: SmsMessage, since: datetime) -> SmsReceipt | None:
        """Twilio's record of this text to this number from us since ``since``:
        its message list, newest first, filtered by recipient and sender."""
        if self._closed:
            raise SmsTemporaryError("the Twilio SMS sender is closed")
        client = self._twilio_client()
        try:
            page = await client.messages.page_async(
                to=message.to, from_=self._from_number, page_size=FIND_PAGE_SIZE
            )
            for _ in range(FIND_PAGES):
                for record in page:
                    created = record.date_created
                    if isinstance(created, datetime) and created < since:
                        return None
                    if record.body == message.body and isinstance(record.sid, str):
                        return SmsReceipt(provider_message_id=record.sid, sender=self.name)
                page = await page.next_page_async()
                if page is None:
                    return None
        except _RetryableStatus as exc:
            raise SmsTemporaryError(str(exc), status=exc.status, code=exc.code) from exc
        except (aiohttp.ClientError, TimeoutError, TwilioException, ValueError) as exc:
            raise SmsTemporaryError(f"Twilio's message list: {type(exc).__name__}: {exc}") from exc
        raise SmsTemporaryError(f"no answer in Twilio's newest {FIND_PAGES * FIND_PAGE_SIZE}")

    async def _attempt(self, client: Any, message: SmsMessage) -> SmsReceipt | _Retryable:
        try:
            created = await client.messages.create_async(
                to=message.to, from_=self._from_number, body=message.body
            )
        except _RetryableStatus as exc:
            return _Retryable(
                str(exc), exc.status, exc.code, exc.retry_after, maybe_accepted=exc.status >= 500
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Only a refused connection proves that nothing reached Twilio.
            return _Retryable(
                f"Twilio unreachable: {type(exc).__name__}: {exc}",
                maybe_accepted=not isinstance(exc, aiohttp.ClientConnectorError),
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _rejection(exc, message.to) from exc
        except (TwilioException, ValueError) as exc:
            # An unreadable answer: Twilio may have queued the message, so do
            # not retry here, but do not call it permanent either.
            raise SmsTemporaryError(f"unexpected answer from Twilio: {exc!r}") from exc
        sid = getattr(created, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise SmsTemporaryError("Twilio accepted the message but returned no sid")
        return SmsReceipt(provider_message_id=sid, sender=self.name)

    def _delay_before_retry(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if attempt >= self._max_attempts:
            return None
        if retry_after is not None:
            # Waiting longer than our own cap would hold the notification
            # agent's slot past reason; SQS redelivery will come back later.
            return retry_after if retry_after <= self._max_backoff else None
        ceiling = min(self._max_backoff, self._base_backoff * 2.0 ** (attempt - 1))
        # "Equal jitter": never less than half the step, so retries stay spaced
        # while many senders hitting the same outage spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def close(self) -> None:
        self._closed = True
        transport, self._transport = self._transport, None
        self._client = None
        if transport is not None:
            await transport.close()


def _rejection(exc: TwilioRestException | TwilioServiceException, to: str) -> SmsError:
    status: int = exc.status
    code: int | None = exc.code
    detail = (exc.detail or exc.title) if isinstance(exc, TwilioServiceException) else exc.msg
    # Twilio's messages may name the number; the error is logged and stored.
    detail = str(detail).replace(to, mask(to))
    text = f"Twilio rejected the message: HTTP {status} code {code}: {detail}"
    if 400 <= status < 500:
        return SmsPermanentError(text, status=status, code=code)
    # Neither 4xx nor retryable (a redirect, say): something is wrong between
    # us and Twilio, so leave it for redelivery rather than drop the SMS.
    return SmsTemporaryError(text, status=status, code=code)


class AllowedDestinations:
    """Any sender, limited to numbers with an allowed prefix: a number
    outside them is refused for good without reaching the provider, whoever
    asks to text it and however it entered the database."""

    def __init__(self, sender: SmsSender, prefixes: tuple[str, ...]) -> None:
        self._sender = sender
        self._prefixes = prefixes
        self.name = sender.name

    def _check(self, message: SmsMessage) -> None:
        if not allowed(message.to, self._prefixes):
            raise SmsPermanentError(
                f"{mask(message.to)} is outside the prefixes that may receive an SMS"
            )

    async def send(self, message: SmsMessage) -> SmsReceipt:
        self._check(message)
        return await self._sender.send(message)

    async def find(self, message: SmsMessage, since: datetime) -> SmsReceipt | None:
        if not allowed(message.to, self._prefixes):
            return None
        return await self._sender.find(message, since)

    async def close(self) -> None:
        await self._sender.close()


def build_sms_sender(settings: TwilioSettings) -> SmsSender:
    """Twilio when all its settings are present, otherwise the log sender."""
    if not settings.configured:
        return LogSmsSender()
    return TwilioSmsSender(
        account_sid=settings.account_sid,
        auth_token=settings.auth_token.get_secret_value(),
        from_number=settings.from_number,
        base_url=settings.base_url or None,
    )
