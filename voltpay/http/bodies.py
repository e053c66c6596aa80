"""Reading request bodies: JSON numbers become Decimal, never float."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from voltpay.domain.sms import TOKEN_MARK
from voltpay.domain.sts import format_token
from voltpay.http.problems import Problem, field_problem
from voltpay.models import idempotency, notifications

B = TypeVar("B", bound=BaseModel)
_CUSTOM_PREFIX = ("invalid_", "amount_")
_GENERIC = frozenset({"missing", "invalid_value"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: web.Request) -> bytes:
    """The body's bytes; one that cannot be read or decoded is the client's
    fault, a 400."""
    try:
        return await request.read()
    except RequestPayloadError:  # e.g. Content-Encoding: gzip on plain bytes
        raise Problem(
            400, "malformed_body", "the request body could not be decoded as its headers say"
        ) from None
    except ConnectionResetError:  # the client went away while sending it
        raise Problem(400, "malformed_body", "the request body ended early") from None


def _encodable(payload: Any) -> bool:
    """Whether every string in the payload is valid Unicode: JSON's escapes
    can spell a lone surrogate ("\\ud800"), which no text column, password
    hasher or log line can take."""
    try:
        json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        if optional:
            return {}
        raise Problem(400, "malformed_json", "the request body must be a JSON object")
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(
            400, "unsupported_content_type", "send the body as Content-Type: application/json"
        )
    try:
        text = raw.decode("utf-8")
        payload = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "malformed_json", "the request body is not valid JSON") from None
    if ("\\ud" in text or "\\uD" in text) and not _encodable(payload):
        raise field_problem(
            "body",
            "invalid_value",
            "strings may not contain unpaired surrogates (\\ud800 to \\udfff)",
            problem_code="validation_failed",
        )
    if "\\u0000" in text:
        # No text column can hold NUL (PostgreSQL refuses it): refuse it here.
        raise field_problem(
            "body",
            "invalid_value",
            "strings may not contain the NUL character",
            problem_code="validation_failed",
        )
    return payload


def field_errors(error: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "body"
        kind = str(item["type"])
        code = (
            kind
            if kind.startswith(_CUSTOM_PREFIX)
            else ("missing" if kind == "missing" else "invalid_value")
        )
        errors.append({"field": location, "code": code, "message": item["msg"]})
    return errors


def validate(model: type[B], payload: Any) -> B:
    if not isinstance(payload, dict):
        raise field_problem(
            "body",
            "invalid_value",
            "the request body must be a JSON object",
            problem_code="validation_failed",
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = field_errors(exc)
        first_custom = next((e["code"] for e in errors if e["code"] not in _GENERIC), None)
        raise Problem(
            422,
            first_custom or "validation_failed",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            errors=errors,
        ) from None


async def read_model(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    return validate(model, await read_json(request, optional=optional))


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def stored_response(response: web.Response) -> idempotency.StoredResponse:
    """An answer as an Idempotency-Key keeps it for replay. A bill's prepaid
    token is kept in the bill alone: TOKEN_MARK stands in its place, and
    ``replayed_body`` reads it from the bill again."""
    body = response.body.decode() if isinstance(response.body, bytes) else ""
    return idempotency.StoredResponse(
        response.status,
        response.headers.get("Content-Type", "application/json"),
        _without_token(body),
    )


def _bill_fields(body: str) -> tuple[str, str] | None:
    """The bill id and token of an answer that shows a bill's token."""
    if '"token":"' not in body:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    bill_id, token = payload.get("billId"), payload.get("token")
    if isinstance(bill_id, str) and isinstance(token, str):
        return bill_id, token
    return None


def _without_token(body: str) -> str:
    found = _bill_fields(body)
    if found is None:
        return body
    return body.replace(f'"token":{orjson.dumps(found[1]).decode()}', f'"token":"{TOKEN_MARK}"')


async def replayed_body(stored: idempotency.StoredResponse) -> bytes:
    """The stored answer as it was first sent: the bill's token read again."""
    found = _bill_fields(stored.body)
    if found is None or found[1] != TOKEN_MARK:
        return stored.body.encode()
    try:
        bill_id = uuid.UUID(found[0])
    except ValueError:
        return stored.body.encode()
    token = (await notifications.tokens_of({bill_id})).get(bill_id)
    shown = format_token(token) if token else None
    return stored.body.replace(
        f'"token":"{TOKEN_MARK}"', f'"token":{orjson.dumps(shown).decode()}'
    ).encode()
