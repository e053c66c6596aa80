"""URL-encoding a query-protocol (SNS) request body, one C-level pass a value."""

from __future__ import annotations

from collections.abc import Mapping

_FORM_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_FORM_TABLE = {byte: chr(byte) if byte in _FORM_SAFE else f"%{byte:02X}" for byte in range(256)}
_FORM_TABLE[ord(" ")] = "+"


def form_quote(value: str | bytes) -> str:
    """``urllib.parse.quote_plus(value, safe="")``, one C-level pass instead of
    a Python call per byte."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return raw.decode("latin-1").translate(_FORM_TABLE)


def form_encode(fields: Mapping[str, object]) -> bytes:
    """The body botocore's ``AWSRequest`` makes of a dict of form fields
    (``urllib.parse.urlencode``): for a PublishBatch of ten events, botocore's
    own way is a Python call per byte of every message."""
    return "&".join(
        f"{form_quote(name)}={form_quote(_text(value))}" for name, value in fields.items()
    ).encode("ascii")


def _text(value: object) -> str | bytes:
    return value if isinstance(value, str | bytes) else str(value)
