"""Keyset pagination, newest first, over (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import TypeVar

from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

M = TypeVar("M", bound=Model)
MAX_PAGE = 200
DEFAULT_PAGE = 50


class InvalidCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time carries its zone")
        # In UTC, as the database compares it: 9999-12-31T23:59-23:59 is in
        # year 10000 there, which neither Python nor asyncpg can write.
        return moment.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API gave out") from None


async def newest_first(
    query: QuerySet[M], limit: int, cursor: str | None
) -> tuple[list[M], str | None]:
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=row_id))
    rows = await query.order_by("-created_at", "-id").limit(limit + 1)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(getattr(last, "created_at"), last.pk)  # noqa: B009
