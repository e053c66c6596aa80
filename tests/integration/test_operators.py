"""Operators: credit any wallet with a reason, reverse a credit once, every
action in an audit trail the API cannot edit; to anyone else the operators'
routes do not exist. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.client import Api, Customer
from voltpay.http import auth
from voltpay.models import wallets
from voltpay.models.tables import LedgerEntry, OperatorAction
from voltpay.models.users import create_user

PASSWORD = "operator passphrase"


async def operator(api: Api) -> Customer:
    """An operator, made as ``voltpay user add --role operator`` makes one, logged in."""
    name = "op" + uuid.uuid4().hex[:10]
    user, wallet, _ = await create_user(
        username=name,
        password_hash=await auth.hash_password(PASSWORD),
        phone_number="+2348000000001",
        currency="NGN",
        role="operator",
    )
    login = await api.expect(
        200, "POST", "/api/auth/login", {"username": name, "password": PASSWORD}
    )
    return Customer(name, PASSWORD, "+2348000000001", str(user.id), str(wallet.id), login["token"])


async def credit(
    api: Api, who: Customer, wallet_id: str, amount: str, key: str, reason: str = "cash at desk 4"
) -> Any:
    return await api.call(
        "POST",
        f"/api/admin/wallets/{wallet_id}/credits",
        json={"amount": amount, "reason": reason},
        headers={"Idempotency-Key": key},
        customer=who,
    )


async def test_an_operator_credits_any_wallet_once_per_key(api: Api) -> None:
    desk, customer = await operator(api), await api.customer()
    first = await credit(api, desk, customer.wallet_id, "120.00", "deposit-118")
    assert first.status == 201, first.body
    assert first.body["amount"] == "120.00"
    assert first.body["operator"] == desk.username
    assert first.body["reason"] == "cash at desk 4"
    again = await credit(api, desk, customer.wallet_id, "120.00", "deposit-118")
    assert (again.status, again.body) == (201, first.body)
    assert again.headers["Idempotent-Replayed"] == "true"
    racing = await asyncio.gather(
        *(credit(api, desk, customer.wallet_id, "5.00", "deposit-119") for _ in range(10))
    )
    assert {r.status for r in racing} <= {201, 409}
    assert await api.balance(customer) == "125.00"
    page = await api.expect(
        200, "GET", f"/api/wallets/{customer.wallet_id}/transactions", customer=customer
    )
    assert [(e["source"], e["amount"]) for e in page["items"]] == [
        ("operator", "5.00"),
        ("operator", "120.00"),
    ]


async def test_an_operator_credit_needs_an_idempotency_key_and_a_reason(api: Api) -> None:
    desk, customer = await operator(api), await api.customer()
    path = f"/api/admin/wallets/{customer.wallet_id}/credits"
    no_key = await api.call("POST", path, json={"amount": "1.00", "reason": "x" * 5}, customer=desk)
    assert (no_key.status, no_key.body["code"]) == (428, "idempotency_key_required")
    for body in ({"amount": "1.00"}, {"amount": "1.00", "reason": ""}, {"reason": "cash"}):
        reply = await api.call(
            "POST", path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}, customer=desk
        )
        assert reply.status == 422, body
    unknown = await credit(api, desk, str(uuid.uuid4()), "1.00", "k-unknown")
    assert unknown.status == 404
    assert await api.balance(customer) == "0.00"
    assert await OperatorAction.all().count() == 0


async def test_a_credit_is_reversed_once_and_both_are_in_the_audit_trail(api: Api) -> None:
    desk, customer = await operator(api), await api.customer()
    made = (await credit(api, desk, customer.wallet_id, "80.00", "dep-1")).body
    path = f"/api/admin/credits/{made['creditId']}/reversal"
    why = {"reason": "the transfer bounced"}
    reversed_ = await api.call(
        "POST", path, json=why, headers={"Idempotency-Key": "rev-1"}, customer=desk
    )
    assert reversed_.status == 201, reversed_.body
    assert reversed_.body["reversedAt"] is not None
    assert await api.balance(customer) == "0.00"
    twice = await api.call(
        "POST", path, json=why, headers={"Idempotency-Key": "rev-2"}, customer=desk
    )
    assert (twice.status, twice.body["code"]) == (409, "credit_already_reversed")
    audit = await api.expect(200, "GET", "/api/admin/audit", customer=desk)
    assert [(a["action"], a["amount"], a["reason"]) for a in audit["items"]] == [
        ("reverse", "80.00", "the transfer bounced"),
        ("credit", "80.00", "cash at desk 4"),
    ]
    assert {a["operator"] for a in audit["items"]} == {desk.username}
    wallet = uuid.UUID(customer.wallet_id)
    assert await wallets.balance_of(wallet) == await wallets.ledger_sum(wallet) == 0


async def test_a_credit_already_spent_is_not_reversed_below_zero(api: Api) -> None:
    desk, customer = await operator(api), await api.customer()
    made = (await credit(api, desk, customer.wallet_id, "100.00", "dep-2")).body
    bill = (await api.bill(customer, "60.00")).body
    assert (await api.pay(customer, bill["billId"])).status == 200
    reply = await api.call(
        "POST",
        f"/api/admin/credits/{made['creditId']}/reversal",
        json={"reason": "bounced"},
        headers={"Idempotency-Key": "rev-3"},
        customer=desk,
    )
    assert (reply.status, reply.body["code"]) == (402, "insufficient_funds")
    assert await api.balance(customer) == "40.00"
    assert await LedgerEntry.filter(kind="reversal").count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/admin/wallets/{wallet}/credits"),
        ("GET", "/api/admin/wallets/{wallet}/credits"),
        ("POST", "/api/admin/credits/{credit}/reversal"),
        ("GET", "/api/admin/audit"),
        ("DELETE", "/api/admin/audit"),
        ("GET", "/api/admin/nothing-here"),
    ],
)
async def test_to_a_customer_every_admin_route_is_not_found(
    api: Api, method: str, path: str
) -> None:
    desk, customer = await operator(api), await api.customer()
    made = (await credit(api, desk, customer.wallet_id, "10.00", "dep-3")).body
    url = path.format(wallet=customer.wallet_id, credit=made["creditId"])
    reply = await api.call(
        method,
        url,
        json={"amount": "99.00", "reason": "let me in"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        customer=customer,
    )
    assert reply.status == 404
    assert await api.balance(customer) == "10.00"
    assert await OperatorAction.all().count() == 1


async def test_the_audit_trail_cannot_be_edited_through_the_api(api: Api) -> None:
    desk, customer = await operator(api), await api.customer()
    await credit(api, desk, customer.wallet_id, "10.00", "dep-4")
    for method in ("PUT", "PATCH", "DELETE"):
        reply = await api.call(method, "/api/admin/audit", json={}, customer=desk)
        assert reply.status == 405
    assert await OperatorAction.all().count() == 1
