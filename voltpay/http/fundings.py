"""Funding intents, the payment gateway's webhook, and the operators' routes."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from aiohttp import web

from voltpay.agents.fundings import ChargeSucceeded, CreditWallet, ReverseCredit
from voltpay.bridges.paystack import MAX_REFERENCE_LENGTH, signature_matches
from voltpay.domain.errors import FundingNotFound
from voltpay.domain.money import to_minor
from voltpay.http.bodies import json_response, read_body, read_model, stored_response
from voltpay.http.context import IDEMPOTENCY_CLAIM, current_user, parse_uuid, services
from voltpay.http.paging import page_of
from voltpay.http.problems import Problem, field_problem, not_found
from voltpay.http.schemas import OperatorCreditRequest, ReversalRequest
from voltpay.http.views import funding_view, operator_action_view, operator_credit_view
from voltpay.models import fundings as store
from voltpay.models.fundings import Credited
from voltpay.models.idempotency import StoredResponse
from voltpay.models.tables import Funding, OperatorAction

routes = web.RouteTableDef()
log = logging.getLogger("voltpay.http.fundings")
WEBHOOK_PATH = "/api/gateway/paystack/webhook"
ADMIN_PREFIX = "/api/admin/"


def _path_id(request: web.Request, name: str) -> uuid.UUID:
    value = parse_uuid(request.match_info[name])
    if value is None:
        raise not_found()
    return value


@routes.get("/api/fundings/{fundingId}")
async def get_funding(request: web.Request) -> web.Response:
    funding = await store.owned(_path_id(request, "fundingId"), current_user(request).id)
    if funding is None:
        raise FundingNotFound("no such funding")
    return json_response(funding_view(funding))


@routes.get("/api/fundings")
async def list_fundings(request: web.Request) -> web.Response:
    rows, next_cursor = await page_of(Funding.filter(user_id=current_user(request).id), request)
    return json_response({"items": [funding_view(row) for row in rows], "nextCursor": next_cursor})


@routes.post(WEBHOOK_PATH)
async def paystack_webhook(request: web.Request) -> web.Response:
    """The signature is the authentication: the hex HMAC-SHA512 of the raw
    body with the secret key. A signed ``charge.success`` is handed to the
    fundings agent, which verifies it with the gateway before any credit; any
    other signed event, or one for a reference that is not ours, is
    acknowledged (200) so the gateway stops sending it."""
    funding = services(request).settings.funding
    if funding.mode != "gateway":
        raise not_found()
    raw = await read_body(request)
    header = request.headers.get("x-paystack-signature")
    if not signature_matches(funding.secret_key.get_secret_value(), raw, header):
        services(request).metrics.gateway_webhooks.labels(result="bad_signature").inc()
        raise Problem(401, "invalid_signature", "x-paystack-signature does not sign this body")
    reference = _charge_reference(raw)
    if reference is None:
        services(request).metrics.gateway_webhooks.labels(result="ignored").inc()
        return json_response({"status": "ignored"})
    outcome = await services(request).fundings.ask(ChargeSucceeded(reference))
    return json_response({"status": str(outcome)})


def _charge_reference(raw: bytes) -> str | None:
    """The reference of a signed ``charge.success``; None for anything else."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("event") != "charge.success":
        return None
    data = event.get("data")
    reference = data.get("reference") if isinstance(data, dict) else None
    if not isinstance(reference, str) or not 0 < len(reference) <= MAX_REFERENCE_LENGTH:
        return None
    return reference


# -- operators ----------------------------------------------------------------------


def _key(request: web.Request) -> Any:
    claim = request.get(IDEMPOTENCY_CLAIM)
    if claim is None:
        raise Problem(
            428,
            "idempotency_key_required",
            "an operator's credit or reversal needs an Idempotency-Key header",
        )
    return claim


@routes.post("/api/admin/wallets/{walletId}/credits")
async def credit_wallet(request: web.Request) -> web.Response:
    wallet_id = _path_id(request, "walletId")
    body = await read_model(request, OperatorCreditRequest)
    maximum = services(request).settings.limits.max_amount
    if body.amount > maximum:
        raise field_problem(
            "amount", "amount_above_maximum", f"amount must be at most {maximum:.2f}"
        )
    operator = current_user(request)

    def answer(done: Credited) -> StoredResponse:
        return stored_response(_credit_response(done, operator.username))

    credited = await services(request).fundings.ask(
        CreditWallet(
            operator, wallet_id, to_minor(body.amount), body.reason, (_key(request), answer)
        )
    )
    return _credit_response(credited, operator.username)


def _credit_response(done: Credited, operator: str) -> web.Response:
    view = operator_credit_view(done.credit, operator)
    return json_response(view, status=201)


@routes.post("/api/admin/credits/{creditId}/reversal")
async def reverse_credit(request: web.Request) -> web.Response:
    credit_id = _path_id(request, "creditId")
    body = await read_model(request, ReversalRequest)
    operator = current_user(request)

    def answer(done: Credited) -> StoredResponse:
        return stored_response(_credit_response(done, operator.username))

    reversed_ = await services(request).fundings.ask(
        ReverseCredit(operator, credit_id, body.reason, (_key(request), answer))
    )
    return _credit_response(reversed_, operator.username)


@routes.get("/api/admin/audit")
async def audit_trail(request: web.Request) -> web.Response:
    rows, next_cursor = await page_of(OperatorAction.all(), request)
    return json_response(
        {"items": [operator_action_view(row) for row in rows], "nextCursor": next_cursor}
    )
