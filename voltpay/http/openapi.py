"""/openapi.json, built from the pydantic models that validate requests."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from voltpay import __version__
from voltpay.http import schemas as s


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    success: int
    response: type[BaseModel] | None
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    query: tuple[str, ...] = ()
    request_optional: bool = False
    extra_success: dict[int, str] = field(default_factory=dict)
    extra_success_model: type[BaseModel] = s.PaidBillOut
    headers: tuple[dict[str, Any], ...] = ()
    idempotent: bool = True
    key_required: bool = False


_SIGNATURE_HEADER: dict[str, Any] = {
    "name": "x-paystack-signature",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
    "description": "hex HMAC-SHA512 of the raw body with the gateway secret key",
}
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/api/auth/register",
        "Register a user and their wallet",
        "users",
        201,
        s.UserOut,
        s.RegisterRequest,
        (409, 422, 429, 503),
        auth=False,
    ),
    Operation(
        "post",
        "/api/auth/verify-phone",
        "Prove the phone number with the code sent to it",
        "users",
        200,
        s.PhoneVerifiedOut,
        s.PhoneCodeRequest,
        (409, 410, 422, 429),
    ),
    Operation(
        "post",
        "/api/auth/verify-phone/resend",
        "Send a new code to the phone number",
        "users",
        202,
        None,
        errors=(409, 422, 429, 503),
    ),
    Operation(
        "post",
        "/api/auth/login",
        "Log in and get a bearer token",
        "users",
        200,
        s.LoginOut,
        s.LoginRequest,
        (401, 422, 429, 503),
        auth=False,
    ),
    Operation("post", "/api/auth/logout", "End this token's session", "users", 204, None),
    Operation("post", "/api/auth/logout-all", "End every session of this user", "users", 204, None),
    Operation(
        "post",
        "/api/auth/password",
        "Change the password; every other session ends",
        "users",
        204,
        None,
        s.ChangePasswordRequest,
        (401, 422, 503),
    ),
    Operation("get", "/api/me", "The logged-in user", "users", 200, s.UserOut),
    Operation(
        "get",
        "/api/wallets/{walletId}",
        "A wallet and its balance",
        "wallets",
        200,
        s.WalletOut,
        errors=(404,),
    ),
    Operation(
        "post",
        "/api/wallets/{walletId}/add-funds",
        "Fund a wallet: in sandbox mode a credit at once (200); in gateway mode a "
        "funding intent to pay on the gateway's checkout page (201), nothing credited yet",
        "wallets",
        200,
        s.FundsAddedOut,
        s.AddFundsRequest,
        (403, 404, 422, 502),
        extra_success={201: "Gateway mode: the funding intent, pending"},
        extra_success_model=s.FundingOut,
    ),
    Operation(
        "get",
        "/api/fundings/{fundingId}",
        "One funding intent of the user's",
        "fundings",
        200,
        s.FundingOut,
        errors=(404,),
    ),
    Operation(
        "get",
        "/api/fundings",
        "The user's funding intents, newest first",
        "fundings",
        200,
        s.FundingPage,
        errors=(422,),
        query=("limit", "cursor"),
    ),
    Operation(
        "post",
        "/api/gateway/paystack/webhook",
        "The payment gateway's signed event (x-paystack-signature: hex HMAC-SHA512 of "
        "the raw body with the secret key); 200 also for references that are not ours",
        "fundings",
        200,
        s.WebhookAck,
        s.PaystackEvent,
        (401, 404),
        auth=False,
        headers=(_SIGNATURE_HEADER,),
        idempotent=False,
    ),
    Operation(
        "post",
        "/api/admin/wallets/{walletId}/credits",
        "Operators only: credit any wallet, with a reason kept in the audit trail "
        "(404 for anyone else)",
        "operators",
        201,
        s.OperatorCreditOut,
        s.OperatorCreditRequest,
        (404, 409, 422, 428),
        key_required=True,
    ),
    Operation(
        "post",
        "/api/admin/credits/{creditId}/reversal",
        "Operators only: take an operator's credit back, once",
        "operators",
        201,
        s.OperatorCreditOut,
        s.ReversalRequest,
        (402, 404, 409, 422, 428),
        key_required=True,
    ),
    Operation(
        "get",
        "/api/admin/audit",
        "Operators only: the audit trail of operator actions, newest first (read-only)",
        "operators",
        200,
        s.AuditPage,
        errors=(404, 422),
        query=("limit", "cursor"),
    ),
    Operation(
        "get",
        "/api/wallets/{walletId}/transactions",
        "The wallet's ledger, newest first",
        "wallets",
        200,
        s.TransactionPage,
        errors=(404, 422),
        query=("limit", "cursor"),
    ),
    Operation(
        "post",
        "/api/electricity/verify",
        "Verify a meter and create a bill",
        "bills",
        201,
        s.BillOut,
        s.VerifyRequest,
        (422, 503),
    ),
    Operation(
        "post",
        "/api/Vend/{billId}/pay",
        "Pay a bill from a wallet and vend",
        "bills",
        200,
        s.PaidBillOut,
        s.PayRequest,
        (402, 404, 409, 410, 502),
        request_optional=True,
        extra_success={202: "The vend outcome is not known yet; the bill is processing"},
    ),
    Operation(
        "post",
        "/api/vend/{billId}/pay",
        "Pay a bill (lower-case alias)",
        "bills",
        200,
        s.PaidBillOut,
        s.PayRequest,
        (402, 404, 409, 410, 502),
        request_optional=True,
        extra_success={202: "The vend outcome is not known yet; the bill is processing"},
    ),
    Operation("get", "/api/bills/{billId}", "One bill", "bills", 200, s.BillOut, errors=(404,)),
    Operation(
        "get",
        "/api/bills",
        "The user's bills, newest first",
        "bills",
        200,
        s.BillPage,
        errors=(422,),
        query=("status", "limit", "cursor"),
    ),
    Operation(
        "get",
        "/api/notifications",
        "The SMS sent to this user, newest first",
        "notifications",
        200,
        s.NotificationPage,
        errors=(422,),
        query=("limit", "cursor"),
    ),
    Operation(
        "get",
        "/api/agents",
        "Each agent's state and counters",
        "operations",
        200,
        s.AgentsOut,
        auth=False,
    ),
    Operation("get", "/healthz", "Liveness", "operations", 200, None, auth=False),
    Operation("get", "/readyz", "Readiness", "operations", 200, None, errors=(503,), auth=False),
    Operation("get", "/metrics", "Prometheus metrics", "operations", 200, None, auth=False),
)
_MODELS: tuple[type[BaseModel], ...] = (
    s.RegisterRequest,
    s.LoginRequest,
    s.AddFundsRequest,
    s.VerifyRequest,
    s.PayRequest,
    s.UserOut,
    s.LoginOut,
    s.WalletOut,
    s.FundsAddedOut,
    s.TransactionPage,
    s.BillOut,
    s.PaidBillOut,
    s.BillPage,
    s.NotificationPage,
    s.ProblemOut,
    s.AgentsOut,
    s.FundingOut,
    s.FundingPage,
    s.WebhookAck,
    s.PaystackEvent,
    s.OperatorCreditRequest,
    s.ReversalRequest,
    s.OperatorCreditOut,
    s.AuditPage,
)
_QUERY_SCHEMAS = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    "cursor": {"type": "string"},
    "status": {"type": "string", "enum": ["pending", "processing", "paid", "expired", "failed"]},
}
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Replays the first response for 24 h; see the API contract.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref(s.ProblemOut)}},
    }


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    success: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        success["content"] = _json(op.response)
    responses[str(op.success)] = success
    for status, description in op.extra_success.items():
        responses[str(status)] = {
            "description": description,
            "content": _json(op.extra_success_model),
        }
    errors = set(op.errors) | ({401} if op.auth else set())
    if op.method == "post":
        errors |= {400, 413}
    for status in sorted(errors):
        responses[str(status)] = _problem(f"error {status}")
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in ("walletId", "billId", "fundingId", "creditId")
        if "{" + name + "}" in op.path
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": _QUERY_SCHEMAS[name]}
        for name in op.query
    ]
    parameters += list(op.headers)
    if op.method == "post" and op.idempotent:
        parameters.append(
            _IDEMPOTENCY_HEADER | {"required": True} if op.key_required else _IDEMPOTENCY_HEADER
        )
    document: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": (op.method + op.path).replace("/", "_").replace("{", "").replace("}", ""),
        "responses": responses,
    }
    if parameters:
        document["parameters"] = parameters
    if op.request is not None:
        document["requestBody"] = {
            "required": not op.request_optional,
            "content": _json(op.request),
        }
    if op.auth:
        document["security"] = [{"bearer": []}]
    return document


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
        by_alias=True,
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voltpay",
            "version": __version__,
            "description": "Electricity-bill payments: wallets, prepaid meters, vending, SMS.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
