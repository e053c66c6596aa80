"""The sandbox funding mode (the default): add-funds credits at once, and the
ledger and the event say it was a sandbox credit."""

from __future__ import annotations

import orjson
import pytest

from tests.client import Api
from voltpay.models.tables import OutboxEvent


async def test_a_sandbox_credit_is_marked_in_the_ledger_and_its_event(api: Api) -> None:
    who = await api.customer(funds="75.00")
    page = await api.expect(200, "GET", f"/api/wallets/{who.wallet_id}/transactions", customer=who)
    [entry] = page["items"]
    assert (entry["kind"], entry["source"]) == ("credit", "sandbox")
    event = await OutboxEvent.get(event_type="wallet_funded")
    assert orjson.loads(event.body)["data"]["source"] == "sandbox"


async def test_the_gateway_webhook_does_not_exist_in_sandbox_mode(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/api/gateway/paystack/webhook",
        data=b'{"event": "charge.success", "data": {"reference": "x"}}',
        headers={"Content-Type": "application/json", "x-paystack-signature": "00"},
    )
    assert reply.status == 404


@pytest.mark.parametrize("path", ["/api/fundings", "/api/admin/audit"])
async def test_routes_need_a_bearer_token(api: Api, path: str) -> None:
    assert (await api.call("GET", path)).status == 401
