"""A fake Twilio REST API (Messages: create and list) for the real twilio client.

    async with FakeTwilioServer(account_sid="AC...", auth_token="...") as fake:
        fake.script([500, 201])          # then point a client at fake.base_url

A scripted 2xx means "behave normally"; any other scripted status is answered
as given, before authentication, the way an overloaded front end would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

_DEFAULT_ERRORS: dict[int, tuple[int, str]] = {
    400: (21211, "The 'To' number is not a valid phone number."),
    401: (20003, "Authenticate"),
    404: (20404, "The requested resource was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "An internal server error has occurred"),
    503: (20503, "Service Unavailable"),
}


def twilio_error(
    status: int, code: int | None = None, message: str | None = None
) -> dict[str, Any]:
    """An error body in the shape the 2010-04-01 API answers with."""
    default_code, default_message = _DEFAULT_ERRORS.get(status, (None, "Error"))
    code = code if code is not None else default_code
    return {
        "code": code,
        "message": message if message is not None else default_message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
        "status": status,
    }


@dataclass(frozen=True)
class ScriptedResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    # None: a Twilio-shaped error for the status (ignored for a 2xx).
    body: Mapping[str, Any] | None = None
    # Seconds to wait before answering, to exercise client timeouts.
    delay_seconds: float = 0.0
    # Take the message as usual, then answer with the scripted status anyway
    # (a front end failing after the message was queued).
    accepted: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    account_sid: str
    to: str | None
    from_: str | None
    body: str | None
    form: Mapping[str, str]
    auth_ok: bool
    answered_status: int


class FakeTwilioServer:
    def __init__(self, *, account_sid: str, auth_token: str, host: str = "127.0.0.1") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.requests: list[ReceivedRequest] = []
        self.messages: list[dict[str, Any]] = []
        self.list_requests = 0
        self._script: deque[ScriptedResponse] = deque()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the fake Twilio server is not running")
        return f"http://{self.host}:{self._port}"

    @property
    def created_count(self) -> int:
        return len(self.messages)

    def script(self, responses: Iterable[int | ScriptedResponse]) -> None:
        """Queue answers for the next requests, one each; then normal service."""
        for response in responses:
            if isinstance(response, int):
                response = ScriptedResponse(status=response)
            self._script.append(response)

    async def start(self) -> None:
        self._stopping.clear()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", self._list)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        # Port 0 lets the kernel pick a free port; read back which one.
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._port = None

    async def __aenter__(self) -> FakeTwilioServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _auth_ok(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        login, _, password = decoded.partition(":")
        return login == self.account_sid and password == self.auth_token

    async def _create(self, request: web.Request) -> web.Response:
        path_sid = request.match_info["account_sid"]
        posted = await request.post()
        form = {key: value for key, value in posted.items() if isinstance(value, str)}
        auth_ok = self._auth_ok(request)
        scripted = self._script.popleft() if self._script else None
        if scripted is not None and scripted.delay_seconds:
            # Cut short by stop(), so a test that gave up waiting is not held
            # up by this handler at cleanup.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), scripted.delay_seconds)

        if scripted is not None and not 200 <= scripted.status < 300:
            if scripted.accepted:
                self._serve(path_sid, form, auth_ok)
            body = scripted.body if scripted.body is not None else twilio_error(scripted.status)
            response = web.json_response(
                dict(body), status=scripted.status, headers=dict(scripted.headers)
            )
        else:
            response = self._serve(path_sid, form, auth_ok)

        self.requests.append(
            ReceivedRequest(
                account_sid=path_sid,
                to=form.get("To"),
                from_=form.get("From"),
                body=form.get("Body"),
                form=form,
                auth_ok=auth_ok,
                answered_status=response.status,
            )
        )
        return response

    async def _list(self, request: web.Request) -> web.Response:
        """The account's messages, newest first, filtered by To and From,
        PageSize at a time (Page counts from 0), as Twilio lists them."""
        path_sid = request.match_info["account_sid"]
        if not self._auth_ok(request):
            return web.json_response(twilio_error(401), status=401)
        if path_sid != self.account_sid:
            return web.json_response(twilio_error(404), status=404)
        query = request.query
        self.list_requests += 1
        found = [
            message
            for message in reversed(self.messages)
            if message["to"] == query.get("To", message["to"])
            and message["from"] == query.get("From", message["from"])
        ]
        size = min(int(query.get("PageSize", "50")), 1000)
        number = int(query.get("Page", "0"))
        page = found[number * size : (number + 1) * size]
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

        def page_uri(n: int) -> str:
            return uri + "?" + urlencode({**query, "PageSize": size, "Page": n})

        more = (number + 1) * size < len(found)
        return web.json_response(
            {
                "messages": page,
                "page": number,
                "page_size": size,
                "start": number * size,
                "end": number * size + max(len(page) - 1, 0),
                "uri": page_uri(number),
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(number + 1) if more else None,
                "previous_page_uri": page_uri(number - 1) if number else None,
            }
        )

    def _serve(self, path_sid: str, form: Mapping[str, str], auth_ok: bool) -> web.Response:
        if not auth_ok:
            return web.json_response(
                twilio_error(401),
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if path_sid != self.account_sid:
            return web.json_response(twilio_error(404), status=404)
        to, from_, body = form.get("To"), form.get("From"), form.get("Body")
        if not to:
            return web.json_response(
                twilio_error(400, 21604, "A 'To' phone number is required."), status=400
            )
        if not from_:
            return web.json_response(
                twilio_error(400, 21603, "A 'From' phone number is required."), status=400
            )
        if not body:
            return web.json_response(
                twilio_error(400, 21602, "Message body is required."), status=400
            )
        if not _E164.match(to):
            return web.json_response(
                twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number."),
                status=400,
            )
        message = self._message(to, from_, body)
        self.messages.append(message)
        return web.json_response(message, status=201)

    def _message(self, to: str, from_: str, body: str) -> dict[str, Any]:
        sid = "SM" + uuid.uuid4().hex
        # RFC 2822 with "+0000", as Twilio writes its dates.
        now = format_datetime(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
