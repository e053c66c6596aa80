"""RFC 9457 problem documents, the only shape an error takes on the wire."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised anywhere below a handler; the front renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        try:
            title = HTTPStatus(self.status).phrase
        except ValueError:
            title = "Error"
        body: dict[str, Any] = {
            "type": f"https://voltpay.dev/problems/{self.code.replace('_', '-')}",
            "title": title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=orjson.dumps(self.document()),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def unauthorized(detail: str = "a valid bearer token is required") -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def not_found(detail: str = "no such resource") -> Problem:
    return Problem(404, "not_found", detail)


def field_problem(
    field: str, code: str, message: str, *, problem_code: str | None = None
) -> Problem:
    """A 422 about one field; the document's code is the field's unless told."""
    return Problem(
        422,
        problem_code or code,
        message,
        errors=[{"field": field, "code": code, "message": message}],
    )
