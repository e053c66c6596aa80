"""A small HTTP client for tests: the API as a user calls it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes


@dataclass
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


class Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

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
        all_headers = dict(headers or {})
        if customer is not None:
            all_headers.update(customer.auth)
        async with self.session.request(
            method, self.base_url + path, json=json, data=data, headers=all_headers
        ) as response:
            raw = await response.read()
            body: Any = None
            if raw and "json" in response.headers.get("Content-Type", ""):
                body = await response.json(content_type=None)
            return Reply(response.status, body, dict(response.headers), raw)

    async def customer(
        self, *, funds: str | None = None, phone: str = "+2348012345678"
    ) -> Customer:
        username = "u" + uuid.uuid4().hex[:12]
        password = "pw-" + uuid.uuid4().hex
        registered = await self.call(
            "POST",
            "/api/auth/register",
            json={"username": username, "password": password, "phoneNumber": phone},
        )
        assert registered.status == 201, registered.body
        login = await self.call(
            "POST", "/api/auth/login", json={"username": username, "password": password}
        )
        assert login.status == 200, login.body
        who = Customer(
            username,
            password,
            phone,
            login.body["userId"],
            login.body["walletId"],
            login.body["token"],
        )
        if funds is not None:
            funded = await self.fund(who, funds)
            assert funded.status == 200, funded.body
        return who

    async def fund(self, who: Customer, amount: Any) -> Reply:
        return await self.call(
            "POST",
            f"/api/wallets/{who.wallet_id}/add-funds",
            json={"amount": amount},
            customer=who,
        )

    async def bill(self, who: Customer, amount: Any = "100.00", meter: str = "A123456") -> Reply:
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

    async def balance(self, who: Customer) -> str:
        wallet = await self.call("GET", f"/api/wallets/{who.wallet_id}", customer=who)
        assert wallet.status == 200, wallet.body
        return str(wallet.body["balance"])


@asynccontextmanager
async def api_for(port: int) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:
        yield Api(session, f"http://127.0.0.1:{port}")


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll until check() returns something truthy; fail with its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
