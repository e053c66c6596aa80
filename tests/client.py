"""The HTTP API as a user calls it, for every tier that calls it: the daemon
in-process (integration) and ``voltpay run`` subprocesses (e2e); and
``eventually``, for what happens after the answer."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDict

PHONE = "+2348012345678"
METER = "A123456"
T = TypeVar("T")


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDict[str]
    raw: bytes


class ApiError(AssertionError):
    """The API answered with another status than the test expected."""


@dataclass(frozen=True)
class Customer:
    username: str
    password: str
    phone: str
    user_id: str
    wallet_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def expected(reply: Reply, status: int, what: str = "the call") -> Any:
    """The body of ``reply`` if it has ``status``, else ApiError."""
    if reply.status != status:
        raise ApiError(f"{what}: expected {status}, got {reply.status}: {reply.body!r}")
    return reply.body


class Api:
    """One daemon's API over an aiohttp session. A call goes as the customer
    it names, else as ``who``: the user ``register_and_login`` made, or one
    handed in to call another daemon as the same user (``base_url`` may also
    change, as after a restart on another port).

    The helpers that name a customer answer the ``Reply``, so a test reads a
    refusal as it is; those that go as ``who`` expect success and answer the
    body (``ApiError`` otherwise)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, who: Customer | None = None
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.who = who

    @property
    def me(self) -> Customer:
        if self.who is None:
            raise ApiError("no user yet: register_and_login first")
        return self.who

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        customer: Customer | None = None,
    ) -> Reply:
        caller = customer or self.who
        all_headers = caller.auth if caller is not None else {}
        all_headers.update(headers or {})
        async with self.session.request(
            method, self.base_url + path, json=json, data=data, headers=all_headers
        ) as response:
            raw = await response.read()
            body: Any = None
            if raw and "json" in response.headers.get("Content-Type", ""):
                body = await response.json(content_type=None)
            return Reply(response.status, body, CIMultiDict(response.headers), raw)

    async def expect(
        self, status: int, method: str, path: str, json: Any = None, **kwargs: Any
    ) -> Any:
        """The body of the answer, which must have ``status``."""
        reply = await self.call(method, path, json=json, **kwargs)
        return expected(reply, status, f"{method} {path}")

    # -- users ----------------------------------------------------------------

    async def customer(
        self, *, funds: str | None = None, phone: str = PHONE, username: str | None = None
    ) -> Customer:
        """A new user, registered and logged in, with ``funds`` in the wallet."""
        username = username or "u" + uuid.uuid4().hex[:12]
        password = "pw-" + uuid.uuid4().hex
        registered = await self.expect(
            201,
            "POST",
            "/api/auth/register",
            {"username": username, "password": password, "phoneNumber": phone},
        )
        login = await self.expect(
            200, "POST", "/api/auth/login", {"username": username, "password": password}
        )
        assert login["walletId"] == registered["walletId"]
        who = Customer(
            username, password, phone, login["userId"], login["walletId"], login["token"]
        )
        if funds is not None:
            expected(await self.fund(who, funds), 200, "add funds")
        return who

    async def login(self, who: Customer) -> Customer:
        """Another session of ``who``: the same customer with a new token."""
        login = await self.expect(
            200, "POST", "/api/auth/login", {"username": who.username, "password": who.password}
        )
        return dataclasses.replace(who, token=login["token"])

    async def register_and_login(self, username: str | None = None) -> Api:
        """Make a new user ``who``; this Api, for chaining."""
        self.who = await self.customer(username=username)
        return self

    # -- as a named customer: the reply ------------------------------------------

    async def fund(self, who: Customer, amount: Any) -> Reply:
        return await self.call(
            "POST",
            f"/api/wallets/{who.wallet_id}/add-funds",
            json={"amount": amount},
            customer=who,
        )

    async def bill(self, who: Customer, amount: Any = "100.00", meter: str = METER) -> Reply:
        """Verify ``meter``: a new bill for ``amount``."""
        return await self.call(
            "POST",
            "/api/electricity/verify",
            json={"meterNumber": meter, "amount": amount},
            customer=who,
        )

    async def pay(self, who: Customer, bill_id: str, **headers: str) -> Reply:
        return await self.call(
            "POST", f"/api/Vend/{bill_id}/pay", customer=who, headers=headers or None
        )

    async def balance(self, who: Customer | None = None) -> str:
        """The wallet's balance as the API writes it (``who``'s by default)."""
        who = who or self.me
        wallet = await self.expect(200, "GET", f"/api/wallets/{who.wallet_id}", customer=who)
        return str(wallet["balance"])

    # -- as ``who``: the body ---------------------------------------------------

    async def add_funds(self, amount: str) -> Any:
        return expected(await self.fund(self.me, amount), 200, "add funds")

    async def verify(self, amount: str, meter: str = METER) -> Any:
        return expected(await self.bill(self.me, amount, meter), 201, "verify")

    async def get_bill(self, bill_id: str) -> Any:
        return await self.expect(200, "GET", f"/api/bills/{bill_id}")

    async def transactions(self) -> list[dict[str, Any]]:
        """Every entry of the wallet's ledger, page after page."""
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = await self.expect(
                200,
                "GET",
                f"/api/wallets/{self.me.wallet_id}/transactions?limit=100"
                + (f"&cursor={cursor}" if cursor else ""),
            )
            items.extend(page["items"])
            if not page["nextCursor"]:
                return items
            cursor = page["nextCursor"]

    async def notifications(self) -> list[dict[str, Any]]:
        page = await self.expect(200, "GET", "/api/notifications?limit=100")
        return list(page["items"])


@asynccontextmanager
async def api_for(port: int) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:
        yield Api(session, f"http://127.0.0.1:{port}")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something
    truthy, and return that; fail, naming ``what`` and the last value, once
    ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = await check()
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s; last: {last!r}")
        await asyncio.sleep(interval)
