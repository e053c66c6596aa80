"""A fake Paystack Transaction API (initialize, verify) and the webhooks
Paystack sends, for the daemon's real gateway adapter.

    async with FakePaystackServer(secret_key="sk_test_...") as fake:
        ...                              # point VOLTPAY_FUNDING__GATEWAY_URL at fake.base_url
        fake.pay(reference)              # the customer pays on the checkout page
        body, signature = fake.charge_success(reference)   # the webhook to deliver

As Paystack does: the secret key as a bearer token, amounts in minor units
(kobo), a transaction ``abandoned`` until paid, an unknown reference answered
400 with ``status: false``, and webhooks signed with
``x-paystack-signature``, the hex HMAC-SHA512 of the raw body with the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Transaction:
    reference: str
    amount: int
    currency: str
    email: str
    callback_url: str
    id: int
    status: str = "abandoned"
    # What the customer actually paid, when the gateway says so.
    paid_amount: int | None = None
    paid_currency: str | None = None
    paid_at: str | None = None


@dataclass
class FakePaystackServer:
    secret_key: str
    host: str = "127.0.0.1"
    transactions: dict[str, Transaction] = field(default_factory=dict)
    verify_calls: list[str] = field(default_factory=list)
    initialize_calls: int = 0
    # Answer every call with 503, as an outage would.
    unavailable: bool = False

    def __post_init__(self) -> None:
        self._ids = itertools.count(4_000_000_000)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._verify_gate: asyncio.Event | None = None
        self.verify_seen = asyncio.Event()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the fake Paystack server is not running")
        return f"http://{self.host}:{self._port}"

    # -- what happens on the gateway's side -----------------------------------------

    def pay(
        self, reference: str, *, amount: int | None = None, currency: str | None = None
    ) -> None:
        """The customer paid (``amount`` and ``currency`` if not the asked ones)."""
        txn = self.transactions[reference]
        txn.status = "success"
        txn.paid_amount = txn.amount if amount is None else amount
        txn.paid_currency = currency or txn.currency
        txn.paid_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def decline(self, reference: str) -> None:
        self.transactions[reference].status = "failed"

    def hold_verify(self) -> None:
        """Verify calls wait (after ``verify_seen`` is set) until released."""
        self._verify_gate = asyncio.Event()

    def release_verify(self) -> None:
        if self._verify_gate is not None:
            self._verify_gate.set()
            self._verify_gate = None

    def sign(self, body: bytes) -> str:
        return hmac.new(self.secret_key.encode(), body, hashlib.sha512).hexdigest()

    def charge_success(self, reference: str, *, amount: int | None = None) -> tuple[bytes, str]:
        """The ``charge.success`` webhook body Paystack sends, and its signature."""
        txn = self.transactions.get(reference)
        data = {
            "id": txn.id if txn else next(self._ids),
            "domain": "test",
            "status": "success",
            "reference": reference,
            "amount": amount if amount is not None else (txn.paid_amount if txn else 10000),
            "currency": txn.currency if txn else "NGN",
            "gateway_response": "Successful",
            "paid_at": txn.paid_at if txn else None,
            "channel": "card",
            "customer": {"email": txn.email if txn else "someone@example.com"},
            "metadata": None,
        }
        body = orjson.dumps({"event": "charge.success", "data": data})
        return body, self.sign(body)

    # -- the API ----------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/transaction/initialize", self._initialize)
        app.router.add_get("/transaction/verify/{reference}", self._verify)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release_verify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._port = None

    async def __aenter__(self) -> FakePaystackServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self.unavailable:
            return _answer(503, False, "Service unavailable")
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return _answer(401, False, "Invalid key")
        return None

    async def _initialize(self, request: web.Request) -> web.Response:
        self.initialize_calls += 1
        refused = self._refusal(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _answer(400, False, "Invalid JSON")
        email, reference = body.get("email"), body.get("reference")
        amount = body.get("amount")
        if isinstance(amount, str) and amount.isdigit():
            amount = int(amount)
        if not isinstance(email, str) or "@" not in email:
            return _answer(400, False, "Invalid Email Address Passed")
        if not isinstance(amount, int) or amount < 100:
            return _answer(400, False, "Invalid Amount Sent")
        if not isinstance(reference, str) or reference in self.transactions:
            return _answer(400, False, "Duplicate Transaction Reference")
        code = "ac_" + reference[-10:]
        self.transactions[reference] = Transaction(
            reference=reference,
            amount=amount,
            currency=body.get("currency") or "NGN",
            email=email,
            callback_url=body.get("callback_url") or "",
            id=next(self._ids),
        )
        return _answer(
            200,
            True,
            "Authorization URL created",
            {
                "authorization_url": f"https://checkout.paystack.com/{code}",
                "access_code": code,
                "reference": reference,
            },
        )

    async def _verify(self, request: web.Request) -> web.Response:
        reference = request.match_info["reference"]
        self.verify_calls.append(reference)
        self.verify_seen.set()
        gate = self._verify_gate
        if gate is not None:
            await gate.wait()
        refused = self._refusal(request)
        if refused is not None:
            return refused
        txn = self.transactions.get(reference)
        if txn is None:
            return _answer(400, False, "Transaction reference not found")
        data: dict[str, Any] = {
            "id": txn.id,
            "domain": "test",
            "status": txn.status,
            "reference": txn.reference,
            "amount": txn.paid_amount if txn.paid_amount is not None else txn.amount,
            "currency": txn.paid_currency or txn.currency,
            "gateway_response": "Successful"
            if txn.status == "success"
            else "The transaction was not completed",
            "paid_at": txn.paid_at,
            "channel": "card",
            "customer": {"email": txn.email},
        }
        return _answer(200, True, "Verification successful", data)


def _answer(status: int, ok: bool, message: str, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"status": ok, "message": message}
    if data is not None:
        body["data"] = data
    return web.json_response(body, status=status)
