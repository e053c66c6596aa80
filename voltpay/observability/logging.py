"""Logging for the daemon: JSON lines or readable text, request/event/agent
context from contextvars, and redaction of secrets before anything is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

request_id_var: ContextVar[str | None] = ContextVar("voltpay_request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("voltpay_event_id", default=None)
agent_var: ContextVar[str | None] = ContextVar("voltpay_agent", default=None)

_CONTEXT_VARS: dict[str, ContextVar[str | None]] = {
    "request_id": request_id_var,
    "event_id": event_id_var,
    "agent": agent_var,
}

MASK = "***"

# Libraries that log every request or connection at INFO; the daemon's own
# access story is the metrics and its own log lines.
_QUIET_LOGGERS = (
    "aiohttp",
    "aiohttp.access",
    "aioboto3",
    "aiobotocore",
    "asyncio",
    "botocore",
    "faust",
    "mode",
    "moto",
    "tortoise",
    "twilio",
    # werkzeug (moto's server) raises itself to INFO unless a level is set.
    "werkzeug",
)

_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
    | _CONTEXT_VARS.keys()
)

_SECRET_WORDS = r"password|passwd|secret|token|api[_-]?key|authorization|credentials?"
_SECRET_KEY = re.compile(_SECRET_WORDS, re.IGNORECASE)
_SECRET_PAIR = re.compile(
    # The key: a word (optionally quoted) containing a secret word. The
    # lookbehind keeps matching to word starts, which keeps long base64 runs
    # from costing quadratic time.
    rf"""(?P<key>(?<![\w.-])["']?[\w.-]{{0,40}}(?:{_SECRET_WORDS})[\w.-]{{0,40}}["']?)"""
    r"(?P<sep>\s*[=:]\s*)"
    r"(?P<scheme>(?:bearer|basic|token)\s+)?"
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&"'}\]]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# postgres://user:password@host: a database URL is the likeliest secret in a
# start-up line.
_URL_PASSWORD = re.compile(r"(?P<prefix>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)

_registered_secrets: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it appears in a log line from now on."""
    global _registered_pattern
    if not value or value in _registered_secrets:
        return
    _registered_secrets.add(value)
    # Longest first, so a secret that contains another is masked whole.
    ordered = sorted(_registered_secrets, key=len, reverse=True)
    _registered_pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def _mask_pair(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match['key']}{match['sep']}{match['scheme'] or ''}{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """``text`` with registered secrets, secret-named values and bearer credentials masked."""
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _BEARER.sub(lambda match: f"{match['scheme']} {MASK}", text)
    text = _URL_PASSWORD.sub(lambda match: f"{match['prefix']}{MASK}@", text)
    return _SECRET_PAIR.sub(_mask_pair, text)


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(None, item) for item in value]
    return value


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Masks secrets in the final message, the traceback and every extra field.

    It runs on the handler, after the message is formatted with its arguments,
    so a secret passed as ``%s`` argument is caught as well.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = redact(record.getMessage())
        except Exception:
            # A broken format string must not leak its arguments, nor raise
            # into the caller: handlers call filters outside their own guard.
            record.msg = redact(f"unformattable log message: {record.msg!s}")
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extras(record).items():
            setattr(record, key, _redact_value(key, value))
        return True


class ContextFilter(logging.Filter):
    """Copies the context variables onto the record where it is emitted, so the
    values survive a hand-off to another thread (a QueueHandler, say)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT_VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


@contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Set ``request_id``, ``event_id`` and/or ``agent`` for the enclosed code."""
    unknown = values.keys() - _CONTEXT_VARS.keys()
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = [
        (_CONTEXT_VARS[name], _CONTEXT_VARS[name].set(value)) for name, value in values.items()
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _context(record: logging.LogRecord) -> dict[str, str]:
    found = {}
    for name in _CONTEXT_VARS:
        value = getattr(record, name, None)
        if value is not None:
            found[name] = str(value)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        try:
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            # orjson refuses a few things json accepts (ints past 64 bits).
            return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [context] message key=value``, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<7}", record.name]
        context = _context(record)
        if context:
            parts.append("[" + " ".join(f"{k}={v}" for k, v in context.items()) + "]")
        parts.append(record.getMessage())
        parts.extend(f"{key}={value!r}" for key, value in _extras(record).items())
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class _VoltpayHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging owns, so a second call replaces it."""


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def configure_logging(
    *,
    format: str,
    level: str,
    stream: TextIO | None = None,
) -> None:
    """Send every log record to ``stream`` (stderr by default) through the
    redaction filter. voltpay loggers log at ``level``; everything else at
    WARNING. Calling it again replaces the previous configuration."""
    if format not in ("auto", "text", "json"):
        raise ValueError(f"log format must be auto, text or json, not {format!r}")
    # First: setLevel refuses an unknown level before anything else changed.
    logging.getLogger("voltpay").setLevel(level.upper())
    target = sys.stderr if stream is None else stream
    use_text = format == "text" or (format == "auto" and _is_tty(target))

    handler = _VoltpayHandler(target)
    handler.setFormatter(TextFormatter() if use_text else JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())

    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _VoltpayHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
