"""What the embedded bus lets through: SNS and SQS calls signed with the
daemon's own credentials, and nothing else.

moto's server answers anyone on its port, with any key: its dashboard
(``/moto-api/``) dumps every message it ever held and resets its state, and
its SNS and SQS routes accept any signature. In front of it, every request
must be a POST to ``/`` with no query string (the one shape of an SNS or SQS
call; moto's other routes never match), carry an AWS Signature Version 4
made with this bus's credentials for its region and for ``sns`` or ``sqs``,
dated within five minutes, over the body it carries. The signature is
recomputed with botocore's own signer, over exactly the headers the request
says it signed. Anything else is answered 403 without reaching moto.

An unchanged request seen again within five minutes is let through, as AWS
lets it through; seeing one takes reading loopback traffic, which an
unprivileged local user cannot.
"""

from __future__ import annotations

import hmac
import io
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

_log = logging.getLogger("voltpay.bus")

SERVICES = frozenset({"sns", "sqs"})
# AWS itself refuses a request dated more than 15 minutes either way; the bus
# shares its clock with the daemon.
MAX_CLOCK_SKEW_SECONDS = 300
# An SNS PublishBatch carries at most 256 KiB of messages; form-encoded that
# is at most three times as much.
MAX_BODY_BYTES = 1024 * 1024
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_REFUSAL_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class BusCredentials:
    """The key pair the embedded bus accepts, made anew at every start."""

    access_key_id: str
    secret_access_key: str
    region: str

    @classmethod
    def generate(cls, region: str) -> BusCredentials:
        return cls(
            access_key_id="AKVP" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            region=region,
        )

    def __repr__(self) -> str:
        return f"BusCredentials(access_key_id={self.access_key_id!r}, region={self.region!r})"


class Refused(Exception):
    """The request does not reach moto; the message says why (no secrets)."""


class _SignedHeadersOnly(SigV4Auth):  # type: ignore[misc]
    """botocore's SigV4, over the headers the request names as signed."""

    def __init__(self, credentials: Credentials, service: str, region: str, signed: list[str]):
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name in self._signed:
            header_map[name] = request.headers[name]
        return header_map


def check_request(
    credentials: BusCredentials,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> str:
    """The service (``sns`` or ``sqs``) a request may call; raises ``Refused``.

    ``headers`` are keyed by lower-case name."""
    if method != "POST" or path != "/" or query:
        raise Refused(f"not an SNS or SQS call: {method[:10]!r} {path[:40]!r}")
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", "").strip())
    if match is None:
        raise Refused("no AWS4-HMAC-SHA256 signature")
    key_id, day, region, service, terminator = (match["credential"].split("/") + [""] * 5)[:5]
    if not hmac.compare_digest(key_id, credentials.access_key_id):
        raise Refused("signed with another key")
    if region != credentials.region or service not in SERVICES or terminator != "aws4_request":
        raise Refused("signed for another region or service")
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        raise Refused("the host and the date are not signed")
    if any(name not in headers for name in signed):
        raise Refused("a signed header is missing")
    amz_date = headers["x-amz-date"]
    try:
        stamp = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise Refused("a malformed X-Amz-Date") from None
    if abs((now - stamp).total_seconds()) > MAX_CLOCK_SKEW_SECONDS or day != amz_date[:8]:
        raise Refused("signed too long ago, or for another day")
    body_hash = sha256(body).hexdigest()
    # botocore takes this header's word for the body; the body itself decides.
    if headers.get("x-amz-content-sha256", body_hash) != body_hash:
        raise Refused("the body is not the one signed")

    request = AWSRequest(
        method=method, url=f"http://{headers['host']}/", headers=dict(headers), data=body
    )
    request.context["timestamp"] = amz_date
    auth = _SignedHeadersOnly(
        Credentials(credentials.access_key_id, credentials.secret_access_key),
        service,
        region,
        signed,
    )
    canonical_request = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical_request), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise Refused("the signature does not match")
    return service


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


_FORBIDDEN = (
    b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
    b"<Message>Access to the embedded bus is denied.</Message></Error></ErrorResponse>"
)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BusGuard:
    """A WSGI application in front of moto's: ``check_request`` on every
    request, 403 for what it refuses. A refusal is logged once a minute at
    most, with the count since the last line."""

    def __init__(
        self,
        app: WSGIApp,
        credentials: BusCredentials,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._app = app
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._refused = 0
        self._logged_at = float("-inf")

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            body = self._body(environ)
            check_request(
                self._credentials,
                method=environ.get("REQUEST_METHOD", ""),
                path=environ.get("PATH_INFO", ""),
                query=environ.get("QUERY_STRING", ""),
                headers=_headers(environ),
                body=body,
                now=self._clock(),
            )
        except Refused as refused:
            self._note(str(refused))
            start_response(
                "403 Forbidden",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(_FORBIDDEN)))],
            )
            return [_FORBIDDEN]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._app(environ, start_response)

    @staticmethod
    def _body(environ: Mapping[str, Any]) -> bytes:
        if environ.get("HTTP_TRANSFER_ENCODING"):
            raise Refused("a body without a length")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Refused("a malformed Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise Refused("a body too large")
        body: bytes = environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise Refused("a body shorter than its length")
        return body

    def _note(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._refused += 1
            if now - self._logged_at < _REFUSAL_LOG_SECONDS:
                return
            count, self._refused, self._logged_at = self._refused, 0, now
        _log.warning("embedded bus refused %d request(s); the last: %s", count, reason)
