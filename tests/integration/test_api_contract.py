"""The HTTP contract of API.md, route by route, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.client import Api, Customer
from voltpay.bridges.electricity import SimulatedProvider
from voltpay.daemon.runtime import Daemon
from voltpay.http.schemas import (
    BillOut,
    FundsAddedOut,
    LoginOut,
    PaidBillOut,
    TransactionPage,
    UserOut,
    WalletOut,
)
from voltpay.models import wallets
from voltpay.models.tables import Bill, OutboxEvent

TOKEN_FORM = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{4}-\d{4}$")
JSON = {"Content-Type": "application/json"}


def assert_problem(reply: Any, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.body["code"] == code, reply.body
    assert reply.body["status"] == status
    assert {"type", "title", "detail"} <= set(reply.body)


# -- users and sessions -------------------------------------------------------


async def test_register_creates_a_user_with_an_empty_wallet(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/api/auth/register",
        json={
            "username": "ada.l_1-x",
            "password": "s3cret-enough",
            "phoneNumber": "+2348012345678",
        },
    )
    assert reply.status == 201, reply.body
    UserOut.model_validate(reply.body)
    assert reply.body["username"] == "ada.l_1-x"
    assert reply.body["phoneNumber"] == "+2348012345678"
    login = await api.call(
        "POST", "/api/auth/login", json={"username": "ada.l_1-x", "password": "s3cret-enough"}
    )
    assert login.status == 200
    LoginOut.model_validate(login.body)
    assert login.body["walletId"] == reply.body["walletId"]
    who = Customer(
        "ada.l_1-x", "", "", login.body["userId"], login.body["walletId"], login.body["token"]
    )
    wallet = await api.call("GET", f"/api/wallets/{who.wallet_id}", customer=who)
    assert wallet.status == 200
    WalletOut.model_validate(wallet.body)
    assert wallet.body["balance"] == "0.00"
    assert wallet.body["currency"] == "NGN"
    me = await api.call("GET", "/api/me", customer=who)
    assert me.body == reply.body


async def test_a_username_is_taken_once(api: Api) -> None:
    body = {"username": "taken", "password": "long enough", "phoneNumber": "+2348012345678"}
    assert (await api.call("POST", "/api/auth/register", json=body)).status == 201
    assert_problem(await api.call("POST", "/api/auth/register", json=body), 409, "username_taken")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (
            {"username": "ab", "password": "long enough", "phoneNumber": "+2348012345678"},
            "invalid_username",
            "username",
        ),
        (
            {"username": "a b c", "password": "long enough", "phoneNumber": "+2348012345678"},
            "invalid_username",
            "username",
        ),
        (
            {"username": "x" * 65, "password": "long enough", "phoneNumber": "+2348012345678"},
            "invalid_username",
            "username",
        ),
        (
            {"username": "abc", "password": "short", "phoneNumber": "+2348012345678"},
            "invalid_password",
            "password",
        ),
        (
            {"username": "abc", "password": "p" * 129, "phoneNumber": "+2348012345678"},
            "invalid_password",
            "password",
        ),
        (
            {"username": "abc", "password": "long enough", "phoneNumber": "08012345678"},
            "invalid_phone_number",
            "phoneNumber",
        ),
        (
            {"username": "abc", "password": "long enough", "phoneNumber": 2348012345678},
            "invalid_phone_number",
            "phoneNumber",
        ),
        (
            {"username": "abc\n", "password": "long enough", "phoneNumber": "+2348012345678"},
            "invalid_username",
            "username",
        ),
        (
            {"username": "abc", "password": "long enough", "phoneNumber": "+2348012345678\n"},
            "invalid_phone_number",
            "phoneNumber",
        ),
        (
            {"username": 123, "password": "long enough", "phoneNumber": "+2348012345678"},
            "invalid_username",
            "username",
        ),
        (
            {"password": "long enough", "phoneNumber": "+2348012345678"},
            "validation_failed",
            "username",
        ),
    ],
)
async def test_register_validates_every_field(
    api: Api, body: dict[str, Any], code: str, field: str
) -> None:
    reply = await api.call("POST", "/api/auth/register", json=body)
    assert_problem(reply, 422, code)
    assert field in {error["field"] for error in reply.body["errors"]}


async def test_missing_fields_are_each_listed(api: Api) -> None:
    reply = await api.call("POST", "/api/auth/register", json={})
    assert reply.status == 422
    assert {e["field"] for e in reply.body["errors"]} == {"username", "password", "phoneNumber"}


@pytest.mark.parametrize(
    ("data", "headers", "code"),
    [
        (b"{not json", JSON, "malformed_json"),
        (b"", JSON, "malformed_json"),
        (b'{"username": NaN}', JSON, "malformed_json"),
        (b"\xff\xfe", JSON, "malformed_json"),
        (b'{"username": "abc"}', {"Content-Type": "text/plain"}, "unsupported_content_type"),
    ],
)
async def test_unreadable_bodies_are_400(
    api: Api, data: bytes, headers: dict[str, str], code: str
) -> None:
    reply = await api.call("POST", "/api/auth/register", data=data, headers=headers)
    assert_problem(reply, 400, code)


async def test_a_json_array_body_is_422(api: Api) -> None:
    assert_problem(
        await api.call("POST", "/api/auth/register", json=[1, 2]), 422, "validation_failed"
    )


async def test_bodies_over_64_kib_are_413(api: Api) -> None:
    big = b'{"username": "' + b"a" * (65 * 1024) + b'"}'
    reply = await api.call("POST", "/api/auth/register", data=big, headers=JSON)
    assert_problem(reply, 413, "payload_too_large")


async def test_login_refuses_wrong_credentials_alike(api: Api) -> None:
    who = await api.customer()
    wrong = await api.call(
        "POST", "/api/auth/login", json={"username": who.username, "password": "nope-nope"}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    unknown = await api.call(
        "POST", "/api/auth/login", json={"username": "ghost", "password": "nope-nope"}
    )
    assert_problem(unknown, 401, "invalid_credentials")


async def test_five_failed_logins_lock_the_username(api: Api) -> None:
    who = await api.customer()
    for _ in range(5):
        reply = await api.call(
            "POST", "/api/auth/login", json={"username": who.username, "password": "wrong-pw"}
        )
        assert reply.status == 401
    locked = await api.call(
        "POST", "/api/auth/login", json={"username": who.username, "password": who.password}
    )
    assert_problem(locked, 429, "too_many_attempts")
    assert 1 <= int(locked.headers["Retry-After"]) <= 300
    other = await api.customer()
    ok = await api.call(
        "POST", "/api/auth/login", json={"username": other.username, "password": other.password}
    )
    assert ok.status == 200


async def test_logout_kills_the_token_at_once(api: Api) -> None:
    who = await api.customer()
    assert (await api.call("GET", "/api/me", customer=who)).status == 200
    out = await api.call("POST", "/api/auth/logout", customer=who)
    assert out.status == 204
    assert_problem(await api.call("GET", "/api/me", customer=who), 401, "unauthorized")
    assert_problem(await api.call("POST", "/api/auth/logout", customer=who), 401, "unauthorized")


PROTECTED = [
    ("GET", "/api/me"),
    ("POST", "/api/auth/logout"),
    ("GET", f"/api/wallets/{uuid.uuid4()}"),
    ("POST", f"/api/wallets/{uuid.uuid4()}/add-funds"),
    ("GET", f"/api/wallets/{uuid.uuid4()}/transactions"),
    ("POST", "/api/electricity/verify"),
    ("POST", f"/api/Vend/{uuid.uuid4()}/pay"),
    ("GET", "/api/bills"),
    ("GET", f"/api/bills/{uuid.uuid4()}"),
    ("GET", "/api/notifications"),
]


async def test_protected_routes_need_a_valid_bearer_token(api: Api) -> None:
    for method, path in PROTECTED:
        for authorization in (None, "Bearer", "Bearer not-a-token", "Basic abc"):
            headers = {"Authorization": authorization} if authorization else None
            reply = await api.call(method, path, headers=headers, json={})
            assert_problem(reply, 401, "unauthorized")
            assert reply.headers["WWW-Authenticate"] == "Bearer"


# -- wallets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "balance"), [(100.5, "100.50"), ("100.00", "100.00"), (7, "7.00")]
)
async def test_add_funds_accepts_numbers_and_strings(api: Api, amount: Any, balance: str) -> None:
    who = await api.customer()
    reply = await api.fund(who, amount)
    assert reply.status == 200, reply.body
    FundsAddedOut.model_validate(reply.body)
    assert reply.body["balance"] == balance
    assert await api.balance(who) == balance


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("1.234", "invalid_amount"),
        (1.234, "invalid_amount"),
        (-5, "amount_not_positive"),
        (0, "amount_not_positive"),
        ("ten", "invalid_amount"),
        (None, "invalid_amount"),
        (True, "invalid_amount"),
        ("1000000.01", "amount_above_maximum"),
        (1e300, "amount_above_maximum"),
    ],
)
async def test_add_funds_refuses_bad_amounts_and_changes_nothing(
    api: Api, amount: Any, code: str
) -> None:
    who = await api.customer(funds="10.00")
    reply = await api.fund(who, amount)
    assert_problem(reply, 422, code)
    assert reply.body["errors"][0]["field"] == "amount"
    assert await api.balance(who) == "10.00"


async def test_someone_elses_wallet_is_not_found(api: Api) -> None:
    ada, bob = await api.customer(funds="50.00"), await api.customer()
    for method, path, body in [
        ("GET", f"/api/wallets/{ada.wallet_id}", None),
        ("POST", f"/api/wallets/{ada.wallet_id}/add-funds", {"amount": "5.00"}),
        ("GET", f"/api/wallets/{ada.wallet_id}/transactions", None),
        ("GET", f"/api/wallets/{uuid.uuid4()}", None),
        ("GET", "/api/wallets/not-a-uuid", None),
    ]:
        assert_problem(await api.call(method, path, json=body, customer=bob), 404, "not_found")
    assert await api.balance(ada) == "50.00"


async def test_transactions_page_newest_first(api: Api) -> None:
    who = await api.customer()
    for amount in ("1.00", "2.00", "3.00", "4.00", "5.00"):
        assert (await api.fund(who, amount)).status == 200
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        path = f"/api/wallets/{who.wallet_id}/transactions?limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = await api.call("GET", path, customer=who)
        assert page.status == 200
        TransactionPage.model_validate(page.body)
        seen += [item["amount"] for item in page.body["items"]]
        cursor = page.body["nextCursor"]
        if cursor is None:
            break
    assert seen == ["5.00", "4.00", "3.00", "2.00", "1.00"]
    assert cursor is None
    first = (await api.call("GET", f"/api/wallets/{who.wallet_id}/transactions", customer=who)).body
    assert first["items"][0]["kind"] == "credit"
    assert first["items"][0]["balanceAfter"] == "15.00"
    assert first["items"][0]["billId"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=201", "invalid_limit"),
        ("cursor=zzz", "invalid_cursor"),
    ],
)
async def test_bad_paging_is_422(api: Api, query: str, code: str) -> None:
    who = await api.customer()
    reply = await api.call(
        "GET", f"/api/wallets/{who.wallet_id}/transactions?{query}", customer=who
    )
    assert_problem(reply, 422, code)


# -- bills and vending ---------------------------------------------------------


async def test_verify_creates_a_pending_bill(api: Api) -> None:
    who = await api.customer()
    reply = await api.bill(who, 100.0, "45012345678")
    assert reply.status == 201, reply.body
    BillOut.model_validate(reply.body)
    bill = reply.body
    assert bill["status"] == "pending"
    assert bill["amount"] == "100.00"
    assert bill["meterType"] == "prepaid"
    assert bill["customerName"] and bill["address"]
    assert bill["token"] is None and bill["units"] is None and bill["paidAt"] is None
    assert bill["tariff"] == "68.00"
    again = await api.bill(who, "100.00", "45012345678")
    assert again.body["customerName"] == bill["customerName"]
    fetched = await api.call("GET", f"/api/bills/{bill['billId']}", customer=who)
    assert fetched.body == bill


@pytest.mark.parametrize(
    ("meter", "amount", "code"),
    [
        ("12-34", "100.00", "invalid_meter_number"),
        ("", "100.00", "invalid_meter_number"),
        ("00000000000", "100.00", "meter_not_found"),
        ("Z999999", "100.00", "meter_not_found"),
        ("A123456", "5.00", "amount_below_minimum"),
        ("A123456", "600000.00", "amount_above_maximum"),
        ("A123456", "1000000.01", "amount_above_maximum"),
        ("A123456", "-1", "invalid_amount"),
    ],
)
async def test_verify_refuses_with_a_code(api: Api, meter: str, amount: str, code: str) -> None:
    who = await api.customer()
    assert_problem(await api.bill(who, amount, meter), 422, code)
    listed = await api.call("GET", "/api/bills", customer=who)
    assert listed.body["items"] == []


async def test_verify_answers_503_when_the_provider_is_down(
    api: Api, provider: SimulatedProvider
) -> None:
    who = await api.customer()
    provider.unavailable = True
    assert_problem(await api.bill(who), 503, "provider_unavailable")


async def test_pay_vends_a_token_and_debits_once(api: Api) -> None:
    who = await api.customer(funds="250.00")
    bill = (await api.bill(who, "100.00")).body
    paid = await api.pay(who, bill["billId"])
    assert paid.status == 200, paid.body
    PaidBillOut.model_validate(paid.body)
    assert paid.body["status"] == "paid"
    assert TOKEN_FORM.match(paid.body["token"])
    assert paid.body["units"] == "1.47"
    assert paid.body["receiptNumber"]
    assert paid.body["paidAt"]
    assert paid.body["walletBalance"] == "150.00"
    assert_problem(await api.pay(who, bill["billId"]), 409, "bill_already_paid")
    assert await api.balance(who) == "150.00"
    items = (
        await api.call("GET", f"/api/wallets/{who.wallet_id}/transactions", customer=who)
    ).body["items"]
    assert [(i["kind"], i["amount"], i["billId"]) for i in items] == [
        ("debit", "100.00", bill["billId"]),
        ("credit", "250.00", None),
    ]
    listed = await api.call("GET", "/api/bills?status=paid", customer=who)
    assert [b["billId"] for b in listed.body["items"]] == [bill["billId"]]
    assert (await api.call("GET", "/api/bills?status=pending", customer=who)).body["items"] == []


@pytest.mark.parametrize("status", ["", "PAID", "paid ", "settled"])
async def test_a_status_filter_names_a_status(api: Api, status: str) -> None:
    """The document's enum is the rule: an empty status is no filter to guess at."""
    who = await api.customer()
    reply = await api.call("GET", f"/api/bills?status={status}", customer=who)
    assert_problem(reply, 422, "invalid_status")


async def test_lower_case_vend_route_is_the_same(api: Api) -> None:
    who = await api.customer(funds="100.00")
    bill = (await api.bill(who, "100.00")).body
    reply = await api.call("POST", f"/api/vend/{bill['billId']}/pay", customer=who)
    assert reply.status == 200
    assert reply.body["walletBalance"] == "0.00"


async def test_insufficient_funds_is_402_and_changes_nothing(api: Api) -> None:
    who = await api.customer(funds="99.99")
    bill = (await api.bill(who, "100.00")).body
    assert_problem(await api.pay(who, bill["billId"]), 402, "insufficient_funds")
    assert await api.balance(who) == "99.99"
    again = await api.call("GET", f"/api/bills/{bill['billId']}", customer=who)
    assert again.body["status"] == "pending"
    assert (await api.fund(who, "0.01")).status == 200
    assert (await api.pay(who, bill["billId"])).status == 200


async def test_someone_elses_bill_is_not_found(api: Api) -> None:
    ada, bob = await api.customer(funds="100.00"), await api.customer(funds="100.00")
    bill = (await api.bill(ada, "100.00")).body
    assert_problem(await api.pay(bob, bill["billId"]), 404, "not_found")
    assert_problem(
        await api.call("GET", f"/api/bills/{bill['billId']}", customer=bob), 404, "not_found"
    )
    assert_problem(await api.pay(bob, str(uuid.uuid4())), 404, "not_found")
    assert_problem(await api.pay(bob, "not-a-uuid"), 404, "not_found")
    paying_with_other = await api.call(
        "POST", f"/api/Vend/{bill['billId']}/pay", json={"walletId": bob.wallet_id}, customer=ada
    )
    assert_problem(paying_with_other, 404, "not_found")
    assert await api.balance(bob) == "100.00"
    assert (await api.call("GET", "/api/bills", customer=bob)).body["items"] == []


async def test_pay_with_a_named_wallet(api: Api) -> None:
    who = await api.customer(funds="100.00")
    bill = (await api.bill(who, "40.00")).body
    reply = await api.call(
        "POST", f"/api/Vend/{bill['billId']}/pay", json={"walletId": who.wallet_id}, customer=who
    )
    assert reply.status == 200
    assert reply.body["walletBalance"] == "60.00"
    bad = await api.call(
        "POST", f"/api/Vend/{bill['billId']}/pay", json={"walletId": "nope"}, customer=who
    )
    assert_problem(bad, 422, "validation_failed")


async def test_a_failed_vend_is_refunded(api: Api, provider: SimulatedProvider) -> None:
    who = await api.customer(funds="100.00")
    bill = (await api.bill(who, "100.00")).body
    provider.failure_rate = 1.0
    assert_problem(await api.pay(who, bill["billId"]), 502, "vend_failed")
    assert await api.balance(who) == "100.00"
    after = (await api.call("GET", f"/api/bills/{bill['billId']}", customer=who)).body
    assert after["status"] == "failed"
    assert after["token"] is None
    kinds = [
        i["kind"]
        for i in (
            await api.call("GET", f"/api/wallets/{who.wallet_id}/transactions", customer=who)
        ).body["items"]
    ]
    assert kinds == ["refund", "debit", "credit"]
    assert_problem(await api.pay(who, bill["billId"]), 409, "bill_not_payable")


@pytest.mark.parametrize("settings_overrides", [{"billing": {"bill_ttl_seconds": 1}}])
async def test_an_expired_bill_is_410(api: Api) -> None:
    import asyncio

    who = await api.customer(funds="100.00")
    bill = (await api.bill(who, "100.00")).body
    await asyncio.sleep(1.1)
    shown = await api.call("GET", f"/api/bills/{bill['billId']}", customer=who)
    assert shown.body["status"] == "expired"
    assert_problem(await api.pay(who, bill["billId"]), 410, "bill_expired")
    assert await api.balance(who) == "100.00"


# -- idempotency ---------------------------------------------------------------


async def test_an_idempotent_retry_replays_the_first_answer(api: Api) -> None:
    who = await api.customer()
    key = {"Idempotency-Key": "fund-" + uuid.uuid4().hex}
    path = f"/api/wallets/{who.wallet_id}/add-funds"
    first = await api.call("POST", path, json={"amount": "10.00"}, headers=key, customer=who)
    second = await api.call("POST", path, json={"amount": "10.00"}, headers=key, customer=who)
    assert first.status == second.status == 200
    assert first.raw == second.raw
    assert await api.balance(who) == "10.00"
    reused = await api.call("POST", path, json={"amount": "11.00"}, headers=key, customer=who)
    assert_problem(reused, 422, "idempotency_key_reused")
    other = await api.customer()
    theirs = await api.call(
        "POST",
        f"/api/wallets/{other.wallet_id}/add-funds",
        json={"amount": "10.00"},
        headers=key,
        customer=other,
    )
    assert theirs.status == 200, "keys are scoped per user"


async def test_a_refused_request_leaves_its_key_free(api: Api) -> None:
    """A 4xx changed nothing, so nothing is kept: the same key, once the
    refusal's cause is gone, does the work."""
    from voltpay.models.tables import IdempotencyRecord

    who = await api.customer()
    bill = (await api.bill(who, "100.00")).body
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await api.call("POST", f"/api/Vend/{bill['billId']}/pay", headers=key, customer=who)
    assert_problem(first, 402, "insufficient_funds")
    assert not await IdempotencyRecord.filter(key=key["Idempotency-Key"]).exists()
    assert (await api.fund(who, "100.00")).status == 200
    second = await api.call("POST", f"/api/Vend/{bill['billId']}/pay", headers=key, customer=who)
    assert second.status == 200, second.body
    assert "Idempotent-Replayed" not in second.headers
    third = await api.call("POST", f"/api/Vend/{bill['billId']}/pay", headers=key, customer=who)
    assert (third.status, third.raw) == (200, second.raw)
    assert third.headers.get("Idempotent-Replayed") == "true"


async def test_a_stranger_s_key_is_not_kept(api: Api) -> None:
    """Registration runs without a session: its key is checked, never stored,
    so strangers cannot fill the table, nor collide on one key."""
    from voltpay.models.tables import IdempotencyRecord

    key = {"Idempotency-Key": "shared-key-" + uuid.uuid4().hex}
    for name in ("stranger-a", "stranger-b"):
        body = {"username": f"{name}-{uuid.uuid4().hex[:8]}", "password": "ample-Horse-battery-9"}
        body["phoneNumber"] = "+2348012345678"
        reply = await api.call("POST", "/api/auth/register", json=body, headers=key)
        assert reply.status == 201, reply.body
    empty = await api.call("POST", "/api/auth/register", data=b"", headers=key)
    assert empty.status in (400, 422)
    assert not await IdempotencyRecord.filter(key=key["Idempotency-Key"]).exists()


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tkey"])
async def test_a_malformed_idempotency_key_is_400(api: Api, key: str) -> None:
    who = await api.customer()
    reply = await api.call(
        "POST",
        f"/api/wallets/{who.wallet_id}/add-funds",
        json={"amount": "1.00"},
        headers={"Idempotency-Key": key},
        customer=who,
    )
    assert_problem(reply, 400, "invalid_idempotency_key")
    assert await api.balance(who) == "0.00"


# -- events written with every state change -------------------------------------


async def test_every_state_change_writes_its_event(api: Api, daemon: Daemon) -> None:
    who = await api.customer(funds="100.00")
    bill = (await api.bill(who, "100.00")).body
    assert (await api.pay(who, bill["billId"])).status == 200
    rows = await OutboxEvent.all().order_by("id")
    types = [row.event_type for row in rows]
    assert types == ["user_registered", "wallet_funded", "bill_created", "payment_completed"]
    import json

    completed = json.loads(rows[-1].body)
    assert completed["eventId"] == str(rows[-1].event_id)
    assert completed["version"] == 1
    assert completed["data"]["billId"] == bill["billId"]
    stored = await Bill.get(id=bill["billId"])
    # The token stays in the bill: the event names the bill, not the token.
    assert "token" not in completed["data"] and stored.token
    assert stored.token not in rows[-1].body
    assert await wallets.ledger_sum(stored.wallet_id) == 0  # type: ignore[arg-type]


# -- operations ------------------------------------------------------------------


async def test_operations_endpoints(api: Api) -> None:
    assert (await api.call("GET", "/healthz")).status == 200
    ready = await api.call("GET", "/readyz")
    assert ready.status == 200, ready.body
    assert {"database", "agents", "sns", "sqs"} <= set(ready.body["checks"])
    metrics = await api.call("GET", "/metrics")
    assert metrics.status == 200
    assert b"voltpay_http_requests_total" in metrics.raw
    docs = await api.call("GET", "/docs")
    assert docs.status == 200 and b"swagger-ui" in docs.raw
    static = await api.call("GET", "/docs/static/swagger-ui-bundle.js")
    assert static.status == 200
    echoed = await api.call("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = [(await api.call("GET", "/healthz")).headers["X-Request-ID"] for _ in range(2)]
    assert generated[0] != generated[1]
    assert all(re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made) for made in generated), generated
    assert_problem(await api.call("GET", "/nowhere"), 404, "not_found")
    assert_problem(await api.call("DELETE", "/healthz"), 405, "method_not_allowed")


async def test_unmatched_paths_and_methods_are_problems(api: Api) -> None:
    who = await api.customer()
    for path in ("/nowhere", "/healthz/deeper", "/docs/static/missing.js", "/docs/static/"):
        missing = await api.call("GET", path)
        assert_problem(missing, 404, "not_found")
        assert missing.headers["X-Request-ID"]
    # A name from the URL never reaches the file system unchecked.
    for escape in ("/docs/static/..%2F__init__.py", "/docs/static/%2E%2E%2F__init__.py"):
        assert_problem(await api.call("GET", escape), 404, "not_found")
    not_allowed = await api.call("PUT", f"/api/wallets/{who.wallet_id}", customer=who)
    assert_problem(not_allowed, 405, "method_not_allowed")
    assert set(not_allowed.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert_problem(await api.call("POST", "/readyz"), 405, "method_not_allowed")
    # Under /api/ a path is authenticated before it is found missing, as a
    # route's would be.
    assert_problem(await api.call("GET", "/api/nowhere"), 401, "unauthorized")
    assert_problem(await api.call("GET", "/api/nowhere", customer=who), 404, "not_found")
    metrics = (await api.call("GET", "/metrics")).raw.decode()
    assert 'route="unmatched",status="404"' in metrics
    assert 'method="PUT",route="unmatched",status="405"' in metrics


async def test_openapi_documents_every_route(api: Api) -> None:
    doc = (await api.call("GET", "/openapi.json")).body
    assert doc["openapi"] == "3.1.0"
    expected = {
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/me",
        "/api/wallets/{walletId}",
        "/api/wallets/{walletId}/add-funds",
        "/api/wallets/{walletId}/transactions",
        "/api/electricity/verify",
        "/api/Vend/{billId}/pay",
        "/api/vend/{billId}/pay",
        "/api/bills/{billId}",
        "/api/bills",
        "/api/notifications",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert expected <= set(doc["paths"])
    register = doc["paths"]["/api/auth/register"]["post"]
    schema_name = register["requestBody"]["content"]["application/json"]["schema"]["$ref"].split(
        "/"
    )[-1]
    assert set(doc["components"]["schemas"][schema_name]["required"]) == {
        "username",
        "password",
        "phoneNumber",
    }


async def _claim_in_progress(
    who: Any, key: str, path: str, body: bytes, now: Any, claimed_by: uuid.UUID | None = None
) -> None:
    """A claim as a daemon leaves it that died after claiming the key and
    before its credit committed: in progress, with nothing credited."""
    import hashlib
    from datetime import timedelta

    from voltpay.models.tables import IdempotencyRecord

    await IdempotencyRecord.create(
        scope=who.user_id,
        key=key,
        request_hash=hashlib.sha256(b"POST " + path.encode() + b"\n" + body).hexdigest(),
        state="in_progress",
        created_at=now,
        expires_at=now + timedelta(days=1),
        claimed_by=claimed_by,
    )


async def test_an_abandoned_idempotency_claim_is_taken_over(api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    from voltpay.models.tables import IdempotencyRecord

    who = await api.customer()
    key = uuid.uuid4().hex
    path = f"/api/wallets/{who.wallet_id}/add-funds"
    body = b'{"amount": "5.00"}'
    # As if a daemon had died after claiming the key and before its credit
    # committed: the claim stays in progress and nothing was credited. (A
    # credit and its stored answer commit together.)
    now = datetime.now(UTC)
    await _claim_in_progress(who, key, path, body, now)
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    busy = await api.call("POST", path, data=body, headers=headers, customer=who)
    assert_problem(busy, 409, "idempotency_in_progress")
    assert await api.balance(who) == "0.00"
    await IdempotencyRecord.filter(key=key).update(created_at=now - timedelta(minutes=6))
    retried = await api.call("POST", path, data=body, headers=headers, customer=who)
    assert retried.status == 200, retried.body
    assert await api.balance(who) == "5.00"
    again = await api.call("POST", path, data=body, headers=headers, customer=who)
    assert (again.status, again.raw) == (200, retried.raw)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await api.balance(who) == "5.00"


@pytest.mark.parametrize("holder_live", [True, False], ids=["live-holder", "dead-holder"])
async def test_a_claim_of_a_dead_daemon_is_taken_over_at_once(api: Api, holder_live: bool) -> None:
    from datetime import UTC, datetime, timedelta

    from voltpay.models import leases

    who = await api.customer()
    key = uuid.uuid4().hex
    path = f"/api/wallets/{who.wallet_id}/add-funds"
    body = b'{"amount": "5.00"}'
    # Another daemon claimed the key a moment ago; its credit has not committed.
    holder = uuid.uuid4()
    await leases.register(holder)
    now = datetime.now(UTC)
    if not holder_live:  # and was killed: not heard from since
        await leases.heartbeat(holder, now - timedelta(seconds=leases.LIVENESS_SECONDS + 1))
    await _claim_in_progress(who, key, path, body, now, claimed_by=holder)
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    retried = await api.call("POST", path, data=body, headers=headers, customer=who)
    if holder_live:
        assert_problem(retried, 409, "idempotency_in_progress")
        assert await api.balance(who) == "0.00"
    else:
        assert retried.status == 200, retried.body
        assert await api.balance(who) == "5.00"


async def test_a_credit_and_its_idempotent_answer_commit_together(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon fails (or dies) after the credit commits and before the front
    stores the answer: the retry replays the answer, it does not credit again."""
    from datetime import UTC, datetime, timedelta

    from voltpay.models import idempotency
    from voltpay.models.tables import IdempotencyRecord

    who = await api.customer()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    path = f"/api/wallets/{who.wallet_id}/add-funds"

    async def lost(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(idempotency, "store", lost)
    first = await api.call("POST", path, json={"amount": "7.00"}, headers=key, customer=who)
    assert first.status == 500
    monkeypatch.undo()
    # Long enough for a claim left in progress to count as abandoned.
    await IdempotencyRecord.filter(key=key["Idempotency-Key"]).update(
        created_at=datetime.now(UTC) - timedelta(minutes=6)
    )
    retried = await api.call("POST", path, json={"amount": "7.00"}, headers=key, customer=who)
    assert retried.status == 200, retried.body
    assert retried.headers.get("Idempotent-Replayed") == "true"
    assert await api.balance(who) == "7.00"
    transactions = await api.call("GET", f"/api/wallets/{who.wallet_id}/transactions", customer=who)
    assert [item["transactionId"] for item in transactions.body["items"]] == [
        retried.body["transactionId"]
    ]


async def test_a_credit_whose_claim_is_gone_is_not_made(daemon: Daemon, api: Api) -> None:
    """A request cancelled at shutdown releases its claim at once, while the
    wallets agent may still be on its credit: that credit must not commit,
    or a retry would credit again."""
    from voltpay.agents.wallets import AddFunds
    from voltpay.domain.errors import IdempotencyKeyBusy
    from voltpay.models import idempotency
    from voltpay.models.tables import LedgerEntry, OutboxEvent

    who = await api.customer()
    events_before = await OutboxEvent.all().count()
    command = AddFunds(
        uuid.UUID(who.user_id),
        uuid.UUID(who.wallet_id),
        500,
        idempotency=idempotency.Key(who.user_id, "released-" + uuid.uuid4().hex),
        answer=lambda funds: idempotency.StoredResponse(200, "application/json", "{}"),
    )
    assert daemon.wallets is not None
    with pytest.raises(IdempotencyKeyBusy):
        await daemon.wallets.mailbox.ask(command)
    assert await api.balance(who) == "0.00"
    assert await LedgerEntry.filter(wallet_id=uuid.UUID(who.wallet_id)).count() == 0
    assert await OutboxEvent.all().count() == events_before


async def test_housekeeping_forgets_expired_sessions_and_keys(api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    from voltpay.models import idempotency
    from voltpay.models import users as user_store
    from voltpay.models.tables import IdempotencyRecord, Session

    who = await api.customer()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    await api.call(
        "POST",
        f"/api/wallets/{who.wallet_id}/add-funds",
        json={"amount": "1.00"},
        headers=key,
        customer=who,
    )
    past = datetime.now(UTC) - timedelta(seconds=1)
    await Session.all().update(expires_at=past)
    await IdempotencyRecord.all().update(expires_at=past)
    await user_store.purge_expired()
    assert await idempotency.purge_expired() == 1
    assert await Session.all().count() == 0
    assert_problem(await api.call("GET", "/api/me", customer=who), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/auth/register"])
async def test_a_nul_character_is_refused_not_a_server_error(api: Api, path: str) -> None:
    body = b'{"username": "a\\u0000b", "password": "long enough", "phoneNumber": "+2348012345678"}'
    reply = await api.call("POST", path, data=body, headers=JSON)
    assert_problem(reply, 422, "validation_failed")
    who = await api.customer()
    verify = await api.call(
        "POST",
        "/api/electricity/verify",
        data=b'{"meterNumber": "A12\\u00003456", "amount": "10.00"}',
        headers=JSON,
        customer=who,
    )
    assert_problem(verify, 422, "validation_failed")


async def test_a_forged_cursor_is_422(api: Api) -> None:
    import base64

    who = await api.customer()
    for raw in (f"2026-01-01T00:00:00|{uuid.uuid4()}", "not|a-uuid", "x" * 40):
        cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        reply = await api.call("GET", f"/api/bills?cursor={cursor}", customer=who)
        assert_problem(reply, 422, "invalid_cursor")
