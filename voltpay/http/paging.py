"""?limit=&cursor= on every list route."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from tortoise.queryset import QuerySet

from voltpay.http.problems import field_problem
from voltpay.models.pagination import DEFAULT_PAGE, MAX_PAGE, InvalidCursor, newest_first


def _limit(request: web.Request) -> int:
    raw_limit = request.query.get("limit", str(DEFAULT_PAGE))
    # ASCII digits only (str.isdigit also takes superscripts and the digits
    # of other scripts, which int() refuses or reads), and few of them.
    well_formed = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 6
    if not well_formed or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise field_problem(
            "limit", "invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}"
        )
    return int(raw_limit)


async def page_of(query: QuerySet[Any], request: web.Request) -> tuple[list[Any], str | None]:
    limit = _limit(request)
    try:
        return await newest_first(query, limit, request.query.get("cursor") or None)
    except InvalidCursor as exc:
        raise field_problem("cursor", "invalid_cursor", str(exc)) from None
