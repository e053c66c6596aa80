"""Signature Version 4 for the event pipeline's hot calls.

The same headers botocore's ``SigV4Auth.add_auth`` puts on the request
(``tests/unit/test_signing.py`` compares the two header for header), for the
one shape of request the bridges send: a POST with a body and no query
string, to one endpoint. botocore's signer rebuilds what does not change from
call to call (the host, the path, the signing key of the day) and carries the
headers through ``email.message``: 150 µs of CPU a call in the daemon, a
quarter of what a PublishBatch, ReceiveMessage or DeleteMessageBatch costs
(bench/results/2026-11-29-vm.md). Here the endpoint's parts are worked out
once and the signing key once a day.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST, _host_from_url
from botocore.utils import normalize_url_path

_ALGORITHM = "AWS4-HMAC-SHA256"
_NOT_SIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
# Headers the signer sets itself; botocore replaces them (or, for Date and
# X-Amz-Content-SHA256, signs differently), which no call of ours needs.
_RESERVED = frozenset(
    {"authorization", "date", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
)


class Signer:
    """SigV4 headers for POSTs to ``url`` (a path, no query string)."""

    def __init__(
        self,
        url: str,
        *,
        service: str,
        region: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        parts = urlsplit(url)
        if parts.query:
            raise ValueError("a query string is not supported")
        self._host = _host_from_url(url)
        self._path = quote(normalize_url_path(parts.path), safe="/~")
        self._service = service
        self._region = region
        self._clock = clock
        self._scope_tail = f"/{region}/{service}/aws4_request"
        self._key: tuple[str, str, bytes] | None = None  # secret key, day, signing key

    def sign(self, headers: Mapping[str, str], body: bytes, credentials: Any) -> dict[str, str]:
        """``headers`` with X-Amz-Date, X-Amz-Security-Token (for temporary
        credentials) and Authorization added. ``credentials`` are botocore's
        frozen ones (access_key, secret_key, token)."""
        signed = dict(headers)
        to_sign: dict[str, list[str]] = {"host": [self._host]}
        for name, value in headers.items():
            lower = name.lower()
            if lower in _RESERVED:
                raise ValueError(f"the signer sets {name} itself")
            if lower not in _NOT_SIGNED:
                to_sign.setdefault(lower, []).append(value)
        now = self._clock()
        stamp = (
            f"{now.year:04d}{now.month:02d}{now.day:02d}"
            f"T{now.hour:02d}{now.minute:02d}{now.second:02d}Z"
        )
        signed["X-Amz-Date"] = stamp
        to_sign["x-amz-date"] = [stamp]
        if credentials.token:
            signed["X-Amz-Security-Token"] = credentials.token
            to_sign["x-amz-security-token"] = [credentials.token]
        names = sorted(to_sign)
        canonical_headers = "".join(
            f"{name}:{','.join(' '.join(v.split()) for v in to_sign[name])}\n" for name in names
        )
        signed_names = ";".join(names)
        canonical_request = (
            f"POST\n{self._path}\n\n{canonical_headers}\n{signed_names}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        day = stamp[:8]
        scope = day + self._scope_tail
        string_to_sign = (
            f"{_ALGORITHM}\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, day), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        signed["Authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return signed

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        if self._key is not None and self._key[0] == secret_key and self._key[1] == day:
            return self._key[2]
        key = f"AWS4{secret_key}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret_key, day, key)
        return key
