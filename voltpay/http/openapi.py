"""/openapi.json, built from the pydantic models that validate requests.

The document describes the listener that serves it, as configured: in
sandbox funding mode add-funds credits at once and the gateway's webhook is
not there; with an operations listener, /metrics and /api/agents are served
there and not here. Every status an operation can answer is listed with the
problem codes it carries, and the links say where an id in one answer is
used next, so a client (or a fuzzer) can follow them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from voltpay import __version__
from voltpay.domain.bills import BillStatus
from voltpay.http import schemas as s
from voltpay.models.pagination import DEFAULT_PAGE, MAX_PAGE

FundingMode = Literal["sandbox", "gateway"]


@dataclass(frozen=True)
class Link:
    """An id in this answer that another operation takes as a parameter."""

    name: str
    method: str
    path: str
    parameter: str
    field: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    success: int
    response: type[BaseModel] | None
    request: type[BaseModel] | None = None
    # Status -> the problem codes it carries; the front's own statuses (400,
    # 401, 413, 429, and 409/422 of a stored Idempotency-Key) are added, and
    # the listener's 400 for a request that is not well-formed HTTP.
    errors: Mapping[int, str] = field(default_factory=dict)
    auth: bool = True
    query: tuple[str, ...] = ()
    request_optional: bool = False
    headers: tuple[dict[str, Any], ...] = ()
    idempotent: bool = True
    key_required: bool = False
    links: tuple[Link, ...] = ()
    # Only in this funding mode; None: in both.
    funding_mode: FundingMode | None = None
    # Served on the operations listener when it has a port of its own.
    operators_listener: bool = False
    accepted: bool = False  # a pay's 202: the vend's outcome is not known yet


def _op_id(method: str, path: str) -> str:
    return (method + path).replace("/", "_").replace("{", "").replace("}", "")


def _to_wallet(source: str) -> tuple[Link, ...]:
    """A wallet id in an answer, as the wallet operations take it."""
    return (
        Link("GetWallet", "get", "/api/wallets/{walletId}", "walletId", source),
        Link("AddFunds", "post", "/api/wallets/{walletId}/add-funds", "walletId", source),
        Link("ListTransactions", "get", "/api/wallets/{walletId}/transactions", "walletId", source),
        Link("CreditWallet", "post", "/api/admin/wallets/{walletId}/credits", "walletId", source),
    )


_TO_BILL = (
    Link("GetBill", "get", "/api/bills/{billId}", "billId", "billId"),
    Link("PayBill", "post", "/api/Vend/{billId}/pay", "billId", "billId"),
    Link("PayBillLowerCase", "post", "/api/vend/{billId}/pay", "billId", "billId"),
)
_PAGING = ("limit", "cursor")
_VALIDATION = "`validation_failed` or a field's own code (`errors` lists each field)"
_AMOUNT = (
    "`invalid_amount`, `amount_not_positive`, `amount_above_maximum` (over "
    "`limits.max_amount`), `validation_failed`"
)
_PAGE_ERRORS = {422: "`invalid_limit`, `invalid_cursor`"}
_BUSY = "`busy` (password hashing is saturated; `Retry-After`)"
_AGENT_BUSY = "`overloaded` (`Retry-After`), `shutting_down`"
_OPERATORS_ONLY = "`not_found`: to anyone but an operator this route does not exist"
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
        {
            409: "`username_taken`",
            422: f"{_VALIDATION}; `weak_password`; `phone_not_supported` (a number "
            "outside the allowed prefixes)",
            429: "`too_many_signups` (`Retry-After`)",
            503: _BUSY,
        },
        auth=False,
        links=_to_wallet("walletId"),
    ),
    Operation(
        "post",
        "/api/auth/verify-phone",
        "Prove the phone number with the code sent to it",
        "users",
        200,
        s.PhoneVerifiedOut,
        s.PhoneCodeRequest,
        {
            409: "`phone_already_verified`",
            410: "`code_expired`",
            422: f"`invalid_code` (wrong, or none was sent); {_VALIDATION}",
            429: "`too_many_attempts` (`Retry-After`): the code allows no more guesses",
        },
    ),
    Operation(
        "post",
        "/api/auth/verify-phone/resend",
        "Send a new code to the phone number",
        "users",
        202,
        None,
        errors={
            409: "`phone_already_verified`",
            422: "`phone_not_supported`",
            429: "`too_many_requests` (one code a minute), `too_many_codes` (`Retry-After`)",
            503: "`sms_unavailable` (`Retry-After`)",
        },
    ),
    Operation(
        "post",
        "/api/auth/login",
        "Log in and get a bearer token",
        "users",
        200,
        s.LoginOut,
        s.LoginRequest,
        {
            401: "`invalid_credentials`",
            422: _VALIDATION,
            429: "`too_many_attempts` (`Retry-After`): too many failed logins",
            503: _BUSY,
        },
        auth=False,
        links=_to_wallet("walletId"),
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
        {
            401: "`invalid_credentials`: the current password is wrong",
            422: f"{_VALIDATION}; `weak_password`",
            503: _BUSY,
        },
    ),
    Operation(
        "get",
        "/api/me",
        "The logged-in user",
        "users",
        200,
        s.UserOut,
        links=_to_wallet("walletId"),
    ),
    Operation(
        "get",
        "/api/wallets/{walletId}",
        "A wallet and its balance",
        "wallets",
        200,
        s.WalletOut,
        errors={404: "`not_found`"},
    ),
    Operation(
        "post",
        "/api/wallets/{walletId}/add-funds",
        "Fund a wallet: a sandbox credit, at once",
        "wallets",
        200,
        s.FundsAddedOut,
        s.AddFundsRequest,
        {
            404: "`not_found`",
            422: f"{_AMOUNT}; `balance_limit_reached`",
            503: _AGENT_BUSY,
        },
        links=(
            Link("GetWallet", "get", "/api/wallets/{walletId}", "walletId", "walletId"),
            Link(
                "ListTransactions",
                "get",
                "/api/wallets/{walletId}/transactions",
                "walletId",
                "walletId",
            ),
        ),
        funding_mode="sandbox",
    ),
    Operation(
        "post",
        "/api/wallets/{walletId}/add-funds",
        "Fund a wallet: a funding intent to pay on the gateway's checkout page, "
        "nothing credited yet",
        "wallets",
        201,
        s.FundingOut,
        s.AddFundsRequest,
        {
            404: "`not_found`",
            422: f"{_AMOUNT}; `amount_below_minimum` (under `funding.minimum_amount`, the "
            "gateway's smallest charge)",
            502: "`gateway_unavailable`",
            503: _AGENT_BUSY,
        },
        links=(Link("GetFunding", "get", "/api/fundings/{fundingId}", "fundingId", "fundingId"),),
        funding_mode="gateway",
    ),
    Operation(
        "get",
        "/api/fundings/{fundingId}",
        "One funding intent of the user's",
        "fundings",
        200,
        s.FundingOut,
        errors={404: "`not_found`"},
    ),
    Operation(
        "get",
        "/api/fundings",
        "The user's funding intents, newest first",
        "fundings",
        200,
        s.FundingPage,
        errors=_PAGE_ERRORS,
        query=_PAGING,
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
        {401: "`invalid_signature`", 503: _AGENT_BUSY},
        auth=False,
        headers=(_SIGNATURE_HEADER,),
        idempotent=False,
        funding_mode="gateway",
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
        {
            404: f"{_OPERATORS_ONLY}; no such wallet",
            422: f"{_AMOUNT}; `balance_limit_reached`",
            428: "`idempotency_key_required`",
            503: _AGENT_BUSY,
        },
        key_required=True,
        links=(
            Link(
                "ReverseCredit",
                "post",
                "/api/admin/credits/{creditId}/reversal",
                "creditId",
                "creditId",
            ),
        ),
    ),
    Operation(
        "post",
        "/api/admin/credits/{creditId}/reversal",
        "Operators only: take an operator's credit back, once",
        "operators",
        201,
        s.OperatorCreditOut,
        s.ReversalRequest,
        {
            402: "`insufficient_funds`: the wallet no longer holds the credit",
            404: f"{_OPERATORS_ONLY}; no such credit",
            409: "`credit_already_reversed`",
            422: _VALIDATION,
            428: "`idempotency_key_required`",
            503: _AGENT_BUSY,
        },
        key_required=True,
    ),
    Operation(
        "get",
        "/api/admin/audit",
        "Operators only: the audit trail of operator actions, newest first (read-only)",
        "operators",
        200,
        s.AuditPage,
        errors={404: _OPERATORS_ONLY, **_PAGE_ERRORS},
        query=_PAGING,
    ),
    Operation(
        "get",
        "/api/wallets/{walletId}/transactions",
        "The wallet's ledger, newest first",
        "wallets",
        200,
        s.TransactionPage,
        errors={404: "`not_found`", **_PAGE_ERRORS},
        query=_PAGING,
    ),
    Operation(
        "post",
        "/api/electricity/verify",
        "Verify a meter and create a bill",
        "bills",
        201,
        s.BillOut,
        s.VerifyRequest,
        {
            422: "`invalid_meter_number`, `meter_not_found`, `amount_below_minimum`, "
            f"`amount_above_maximum` (the meter's own limits); {_AMOUNT}",
            503: f"`provider_unavailable`; {_AGENT_BUSY}",
        },
        links=_TO_BILL,
    ),
    *(
        Operation(
            "post",
            path,
            summary,
            "bills",
            200,
            s.PaidBillOut,
            s.PayRequest,
            {
                402: "`insufficient_funds`",
                404: "`not_found`: no such bill, or the wallet is not the user's",
                409: "`bill_already_paid`, `bill_not_payable` (its payment failed)",
                410: "`bill_expired`",
                422: _VALIDATION,
                502: "`vend_failed`: the provider refused the vend; the debit is refunded",
                503: _AGENT_BUSY,
            },
            request_optional=True,
            links=(Link("GetBill", "get", "/api/bills/{billId}", "billId", "billId"),),
            accepted=True,
        )
        for path, summary in (
            ("/api/Vend/{billId}/pay", "Pay a bill from a wallet and vend"),
            ("/api/vend/{billId}/pay", "Pay a bill (lower-case alias)"),
        )
    ),
    Operation(
        "get",
        "/api/bills/{billId}",
        "One bill",
        "bills",
        200,
        s.BillOut,
        errors={404: "`not_found`"},
    ),
    Operation(
        "get",
        "/api/bills",
        "The user's bills, newest first",
        "bills",
        200,
        s.BillPage,
        errors={422: "`invalid_status`, `invalid_limit`, `invalid_cursor`"},
        query=("status", *_PAGING),
    ),
    Operation(
        "get",
        "/api/notifications",
        "The SMS sent to this user, newest first",
        "notifications",
        200,
        s.NotificationPage,
        errors=_PAGE_ERRORS,
        query=_PAGING,
    ),
    Operation(
        "get",
        "/api/agents",
        "Each agent's state and counters",
        "operations",
        200,
        s.AgentsOut,
        auth=False,
        operators_listener=True,
    ),
    Operation("get", "/healthz", "Liveness", "operations", 200, None, auth=False),
    Operation(
        "get",
        "/readyz",
        "Readiness",
        "operations",
        200,
        None,
        errors={503: "not ready: `failing` names the parts"},
        auth=False,
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics",
        "operations",
        200,
        None,
        auth=False,
        operators_listener=True,
    ),
)
_QUERY: dict[str, dict[str, Any]] = {
    "limit": {
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
        "description": f"items per page, 1 to {MAX_PAGE}",
    },
    "cursor": {
        "schema": {"type": "string"},
        "description": "the `nextCursor` of the page before; absent or empty: the first page. "
        "A cursor this API did not give out answers 422 `invalid_cursor`.",
    },
    "status": {
        "schema": {
            "type": "string",
            "enum": [status.value for status in BillStatus],
        },
        "description": "only bills in this status; absent: every bill. Any other value, "
        "the empty one too, answers 422 `invalid_status`.",
    },
}
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": s.IDEMPOTENCY_KEY_PATTERN,
    },
    "description": "1-255 printable ASCII characters, no space (else 400 "
    "`invalid_idempotency_key`). With a session, the first answer is kept for 24 h and "
    "replayed on a retry; the same key with another request answers 422 "
    "`idempotency_key_reused`, and while the first is running 409 `idempotency_in_progress`.",
}
_PATH_IDS = ("walletId", "billId", "fundingId", "creditId")


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _errors(op: Operation) -> dict[int, str]:
    """The operation's own refusals and those of the front around it."""
    errors: dict[int, list[str]] = {status: [codes] for status, codes in op.errors.items()}

    def add(status: int, codes: str) -> None:
        errors.setdefault(status, []).append(codes)

    if op.method == "post":
        add(
            400,
            "`malformed_json`, `malformed_body`, `unsupported_content_type`, "
            "`invalid_idempotency_key`",
        )
        add(413, "`payload_too_large`")
    add(400, "`malformed_request`: not well-formed HTTP (a header, the framing)")
    if op.auth:
        add(401, "`unauthorized`: no bearer token, or one that is unknown, expired or logged out")
    if op.path.startswith("/api/"):
        add(429, "`too_many_requests` (`Retry-After`): too many requests in flight at once")
    if op.method == "post" and op.idempotent and op.auth:
        add(409, "`idempotency_in_progress` (`Retry-After`)")
        add(422, "`idempotency_key_reused`")
    return {status: "; ".join(codes) for status, codes in errors.items()}


def _links(op: Operation, present: set[str]) -> dict[str, Any]:
    return {
        link.name: {
            "operationId": _op_id(link.method, link.path),
            "parameters": {link.parameter: f"$response.body#/{link.field}"},
        }
        for link in op.links
        if _op_id(link.method, link.path) in present
    }


def _responses(op: Operation, present: set[str]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        success["content"] = _json(op.response)
    links = _links(op, present)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(op.success): success}
    if op.accepted:
        responses["202"] = {
            "description": "The vend's outcome is not known yet; the bill is processing",
            "content": _json(s.PaidBillOut),
            **({"links": links} if links else {}),
        }
    for status, codes in sorted(_errors(op).items()):
        responses[str(status)] = {
            "description": codes,
            "content": {"application/problem+json": {"schema": _ref(s.ProblemOut)}},
        }
    return responses


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in _PATH_IDS
        if "{" + name + "}" in op.path
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, **_QUERY[name]} for name in op.query
    ]
    parameters += list(op.headers)
    if op.method == "post" and op.idempotent:
        parameters.append(
            _IDEMPOTENCY_HEADER | {"required": True} if op.key_required else _IDEMPOTENCY_HEADER
        )
    return parameters


def _operation(op: Operation, present: set[str]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": _op_id(op.method, op.path),
        "responses": _responses(op, present),
    }
    parameters = _parameters(op)
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


def served(funding_mode: FundingMode, operators_listener: bool) -> tuple[Operation, ...]:
    """The operations of the main listener so configured."""
    return tuple(
        op
        for op in OPERATIONS
        if op.funding_mode in (None, funding_mode)
        and not (op.operators_listener and operators_listener)
    )


def _models(operations: tuple[Operation, ...]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {s.ProblemOut.__name__: s.ProblemOut}
    for op in operations:
        for model in (op.request, op.response, s.PaidBillOut if op.accepted else None):
            if model is not None:
                found[model.__name__] = model
    return list(found.values())


@functools.cache
def openapi_document(
    funding_mode: FundingMode = "sandbox", operators_listener: bool = False
) -> dict[str, Any]:
    """The document of the main listener: ``operators_listener`` when
    /metrics and /api/agents are served on a listener of their own."""
    operations = served(funding_mode, operators_listener)
    _, definitions = models_json_schema(
        [(model, "validation") for model in _models(operations)],
        ref_template="#/components/schemas/{model}",
        by_alias=True,
    )
    present = {_op_id(op.method, op.path) for op in operations}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, present)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voltpay",
            "version": __version__,
            "description": "Electricity-bill payments: wallets, prepaid meters, vending, SMS. "
            f"Funding mode: {funding_mode}.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
