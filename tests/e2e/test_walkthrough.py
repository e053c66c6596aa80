"""A user's first session against `voltpay run`: register, fund, buy
electricity, get the token by SMS, log out; plus the operational pages."""

from __future__ import annotations

import re
import signal
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp

from tests.client import METER, PHONE, Api, eventually
from tests.e2e.conftest import TOKEN_PATTERN, Daemons

# Every path in the HTTP contract (API.md), as the OpenAPI document spells it.
CONTRACT_PATHS = {
    "/api/auth/register": {"post"},
    "/api/auth/login": {"post"},
    "/api/auth/logout": {"post"},
    "/api/auth/logout-all": {"post"},
    "/api/auth/password": {"post"},
    "/api/auth/verify-phone": {"post"},
    "/api/auth/verify-phone/resend": {"post"},
    "/api/me": {"get"},
    "/api/wallets/{walletId}": {"get"},
    "/api/wallets/{walletId}/add-funds": {"post"},
    "/api/wallets/{walletId}/transactions": {"get"},
    "/api/electricity/verify": {"post"},
    "/api/Vend/{billId}/pay": {"post"},
    "/api/vend/{billId}/pay": {"post"},
    "/api/bills/{billId}": {"get"},
    "/api/bills": {"get"},
    "/api/notifications": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}


async def test_register_fund_pay_notify_logout(
    daemons: Daemons,
    http: aiohttp.ClientSession,
    database_env: dict[str, str],
    tmp_path: Path,
) -> None:
    daemon = daemons.start(database_env)
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)

    username = f"ada_{uuid.uuid4().hex[:8]}"
    await api.register_and_login(username)
    me = await api.expect(200, "GET", "/api/me")
    assert me == {
        "userId": api.me.user_id,
        "username": username,
        "phoneNumber": PHONE,
        "walletId": api.me.wallet_id,
        "phoneVerified": False,
    }
    assert await api.balance() == "0.00"

    funded = await api.add_funds("250.00")
    assert funded["walletId"] == api.me.wallet_id
    assert funded["balance"] == "250.00"

    bill = await api.verify("100.00")
    assert bill["status"] == "pending"
    assert bill["meterNumber"] == METER
    assert bill["amount"] == "100.00"
    assert bill["token"] is None and bill["units"] is None and bill["paidAt"] is None
    assert bill["customerName"] and bill["address"]
    bill_id = bill["billId"]
    uuid.UUID(bill_id)

    paid = await api.expect(200, "POST", f"/api/Vend/{bill_id}/pay")
    assert paid["billId"] == bill_id
    assert paid["status"] == "paid"
    assert re.fullmatch(TOKEN_PATTERN, paid["token"]), paid["token"]
    assert Decimal(paid["units"]) > 0
    assert re.fullmatch(r"\d+\.\d{2}", paid["units"])
    assert paid["walletBalance"] == "150.00"
    assert paid["receiptNumber"]
    assert paid["paidAt"]
    token = paid["token"]

    shown = await api.get_bill(bill_id)
    assert shown["status"] == "paid"
    assert shown["token"] == token
    assert shown["units"] == paid["units"]
    assert shown["receiptNumber"] == paid["receiptNumber"]
    assert await api.balance() == "150.00"

    transactions = await api.transactions()
    assert [(t["kind"], t["amount"], t["balanceAfter"]) for t in transactions] == [
        ("debit", "100.00", "150.00"),
        ("credit", "250.00", "250.00"),
    ]
    assert transactions[0]["billId"] == bill_id
    assert transactions[1]["billId"] is None
    assert transactions[1]["transactionId"] == funded["transactionId"]

    async def token_sms() -> dict[str, object] | None:
        for item in await api.notifications():
            if item["eventType"] == "payment_completed" and item["status"] != "queued":
                return item
        return None

    sms = await eventually(token_sms, timeout=10, what="the payment_completed SMS")
    assert token in str(sms["body"])
    assert sms["to"] == PHONE
    assert sms["status"] == "sent"

    assert await api.expect(204, "POST", "/api/auth/logout") is None
    refused = await api.call("GET", "/api/me")
    assert refused.status == 401
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.body["status"] == 401
    assert (await api.call("GET", f"/api/bills/{bill_id}")).status == 401

    daemon.send(signal.SIGTERM)
    assert await daemon.wait_exit(30) == 0
    if not database_env:
        # The embedded default keeps its database under the working directory.
        assert (tmp_path / "var" / "voltpay.sqlite3").is_file()


async def test_openapi_docs_and_metrics(daemons: Daemons, http: aiohttp.ClientSession) -> None:
    daemon = daemons.start()
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)
    # Some traffic through the bills agent, so its counter exists.
    await api.register_and_login()
    await api.verify("50.00")

    document = await api.expect(200, "GET", "/openapi.json")
    assert document["openapi"] == "3.1.0"
    for path, methods in CONTRACT_PATHS.items():
        assert path in document["paths"], f"{path} is missing from /openapi.json"
        assert methods <= set(document["paths"][path]), path

    async with http.get(daemon.base_url + "/docs") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        page = await response.text()
    assert "/openapi.json" in page
    # The page's assets are served too.
    for asset in re.findall(r'(?:src|href)="(/docs/[^"]+)"', page):
        async with http.get(daemon.base_url + asset) as response:
            assert response.status == 200, asset

    async with http.get(daemon.base_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        metrics = await response.text()
    assert re.search(r"^voltpay_http_requests_total\{.*\} \d", metrics, re.MULTILINE)
    processed = re.search(
        r'^voltpay_agent_messages_processed_total\{agent="bills"\} (\S+)$', metrics, re.MULTILINE
    )
    assert processed, "no bills agent counter in /metrics"
    assert float(processed.group(1)) >= 1


async def test_every_payment_gets_its_own_token(
    daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    """A prepaid meter accepts a token once: two purchases answered with the
    same token leave the customer paying twice for one credit."""
    daemon = daemons.start()
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)
    await api.register_and_login()
    purchases = 17  # more than the 16 values of the token's random nibble
    await api.add_funds(f"{Decimal('20.00') * purchases}")
    tokens: dict[str, str] = {}
    for _ in range(purchases):
        bill_id = (await api.verify("20.00"))["billId"]
        paid = await api.expect(200, "POST", f"/api/Vend/{bill_id}/pay")
        tokens[bill_id] = paid["token"]
    repeated = {t for t in tokens.values() if list(tokens.values()).count(t) > 1}
    assert not repeated, f"{purchases} purchases on meter {METER} share tokens: {repeated}"
