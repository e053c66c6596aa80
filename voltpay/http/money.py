"""Wallets and bills: parse, ask an agent, answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from aiohttp import web

from voltpay.agents.bills import CreateBill, PayBill
from voltpay.agents.fundings import StartFunding
from voltpay.agents.wallets import AddFunds, FundsAdded
from voltpay.domain.bills import BillStatus
from voltpay.domain.errors import BillNotFound, WalletNotFound
from voltpay.domain.money import format_minor, to_minor
from voltpay.http.bodies import json_response, read_model, stored_response
from voltpay.http.context import IDEMPOTENCY_CLAIM, current_user, parse_uuid, services
from voltpay.http.paging import page_of
from voltpay.http.problems import field_problem, not_found
from voltpay.http.schemas import AddFundsRequest, PayRequest, VerifyRequest
from voltpay.http.views import bill_view, funding_view, transaction_view, wallet_view
from voltpay.models import bills as bill_store
from voltpay.models import idempotency, wallets
from voltpay.models.tables import Bill, LedgerEntry

routes = web.RouteTableDef()


def _path_id(request: web.Request, name: str) -> uuid.UUID:
    value = parse_uuid(request.match_info[name])
    if value is None:
        raise not_found()
    return value


def _check_max(amount: Decimal, request: web.Request) -> int:
    maximum = services(request).settings.limits.max_amount
    if amount > maximum:
        raise field_problem(
            "amount", "amount_above_maximum", f"amount must be at most {maximum:.2f}"
        )
    return to_minor(amount)


@routes.get("/api/wallets/{walletId}")
async def get_wallet(request: web.Request) -> web.Response:
    try:
        wallet = await wallets.owned_wallet(_path_id(request, "walletId"), current_user(request).id)
    except WalletNotFound:
        raise not_found("no such wallet") from None
    return json_response(wallet_view(wallet))


@routes.post("/api/wallets/{walletId}/add-funds")
async def add_funds(request: web.Request) -> web.Response:
    wallet_id = _path_id(request, "walletId")
    body = await read_model(request, AddFundsRequest)
    amount_minor = _check_max(body.amount, request)
    svc = services(request)
    if svc.settings.funding.mode == "gateway":
        # Nothing is credited here: the intent is paid on the gateway's page.
        funding = await svc.fundings.ask(
            StartFunding(current_user(request).id, wallet_id, amount_minor)
        )
        return json_response(funding_view(funding), status=201)
    claim = request.get(IDEMPOTENCY_CLAIM)
    answer = await svc.wallets.ask(
        AddFunds(
            current_user(request).id,
            wallet_id,
            amount_minor,
            idempotency=claim,
            answer=_stored_funds_answer if claim is not None else None,
        )
    )
    return json_response(_funds_body(answer))


def _funds_body(answer: FundsAdded) -> dict[str, str]:
    return {
        "walletId": str(answer.wallet_id),
        "balance": format_minor(answer.balance_minor),
        "transactionId": str(answer.transaction_id),
    }


def _stored_funds_answer(answer: FundsAdded) -> idempotency.StoredResponse:
    """The answer as the front would store it after the fact."""
    return stored_response(json_response(_funds_body(answer)))


@routes.get("/api/wallets/{walletId}/transactions")
async def list_transactions(request: web.Request) -> web.Response:
    wallet_id = _path_id(request, "walletId")
    try:
        await wallets.owned_wallet(wallet_id, current_user(request).id)
    except WalletNotFound:
        raise not_found("no such wallet") from None
    rows, next_cursor = await page_of(LedgerEntry.filter(wallet_id=wallet_id), request)
    return json_response(
        {"items": [transaction_view(row) for row in rows], "nextCursor": next_cursor}
    )


@routes.post("/api/electricity/verify")
async def verify_meter(request: web.Request) -> web.Response:
    body = await read_model(request, VerifyRequest)
    amount_minor = _check_max(body.amount, request)
    answer = await services(request).bills.ask(
        CreateBill(current_user(request).id, body.meter_number, amount_minor)
    )
    return json_response(bill_view(answer.bill), status=201)


async def pay_bill(request: web.Request) -> web.Response:
    bill_id = _path_id(request, "billId")
    body = await read_model(request, PayRequest, optional=True)
    answer = await services(request).bills.ask(
        PayBill(current_user(request).id, bill_id, body.wallet_id)
    )
    view = bill_view(answer.bill)
    view["walletBalance"] = (
        format_minor(answer.wallet_balance_minor)
        if answer.wallet_balance_minor is not None
        else None
    )
    return json_response(view, status=200 if answer.settled else 202)


routes.post("/api/Vend/{billId}/pay")(pay_bill)
routes.post("/api/vend/{billId}/pay")(pay_bill)


@routes.get("/api/bills/{billId}")
async def get_bill(request: web.Request) -> web.Response:
    try:
        bill = await bill_store.owned_bill(_path_id(request, "billId"), current_user(request).id)
    except BillNotFound:
        raise not_found("no such bill") from None
    return json_response(bill_view(bill, datetime.now(UTC)))


@routes.get("/api/bills")
async def list_bills(request: web.Request) -> web.Response:
    query = Bill.filter(user_id=current_user(request).id)
    status = request.query.get("status")
    if status is not None:  # "?status=" names no status: refused like any other
        if status not in {s.value for s in BillStatus}:
            raise field_problem(
                "status",
                "invalid_status",
                "status must be one of " + ", ".join(s.value for s in BillStatus),
            )
        query = query.filter(status=status)
    rows, next_cursor = await page_of(query, request)
    now = datetime.now(UTC)
    return json_response(
        {"items": [bill_view(row, now) for row in rows], "nextCursor": next_cursor}
    )
