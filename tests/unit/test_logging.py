from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from voltpay.observability.logging import (
    agent_var,
    configure_logging,
    event_id_var,
    log_context,
    redact,
    register_secret,
    request_id_var,
)

LOG = logging.getLogger("voltpay.tests.logging")


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; give it back after each test."""
    root = logging.getLogger()
    names = ("voltpay", "aiohttp.access", "botocore", "werkzeug")
    saved_handlers = root.handlers[:]
    saved_levels = {name: logging.getLogger(name).level for name in names}
    saved_root_level = root.level
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_root_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def configured(format: str = "json", level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(format=format, level=level, stream=stream)
    return stream


def test_json_line_has_the_documented_fields() -> None:
    stream = configured()

    LOG.info("bill %s paid", "b-1", extra={"bill_id": "b-1", "amount_minor": 5000})

    [entry] = json_lines(stream)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "voltpay.tests.logging"
    assert entry["message"] == "bill b-1 paid"
    assert entry["bill_id"] == "b-1"
    assert entry["amount_minor"] == 5000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])
    assert datetime.fromisoformat(entry["timestamp"]).utcoffset() is not None
    assert not {"request_id", "event_id", "agent", "exception"} & entry.keys()


def test_json_line_carries_the_context_variables() -> None:
    stream = configured()

    with log_context(request_id="req-1", agent="bills"):
        with log_context(event_id="evt-9"):
            LOG.info("inner")
        LOG.info("outer")
    LOG.info("after")

    inner, outer, after = json_lines(stream)
    assert (inner["request_id"], inner["event_id"], inner["agent"]) == ("req-1", "evt-9", "bills")
    assert (outer["request_id"], outer["agent"]) == ("req-1", "bills")
    assert "event_id" not in outer
    assert "request_id" not in after


def test_log_context_resets_the_variables_even_on_error() -> None:
    with pytest.raises(RuntimeError), log_context(request_id="r", event_id="e", agent="a"):
        assert (request_id_var.get(), event_id_var.get(), agent_var.get()) == ("r", "e", "a")
        raise RuntimeError

    assert (request_id_var.get(), event_id_var.get(), agent_var.get()) == (None, None, None)


def test_log_context_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="user_id"), log_context(user_id="u-1"):
        pass


def test_json_line_includes_the_exception_text() -> None:
    stream = configured()

    try:
        raise ValueError("bad meter")
    except ValueError:
        LOG.exception("vend failed")

    [entry] = json_lines(stream)
    assert entry["level"] == "ERROR"
    assert "Traceback" in entry["exception"]
    assert "ValueError: bad meter" in entry["exception"]


def test_extras_that_json_cannot_encode_are_written_as_text() -> None:
    stream = configured()

    LOG.info("odd", extra={"when": datetime(2024, 1, 2), "big": 2**70, "ids": {1: "x"}})

    [entry] = json_lines(stream)
    assert entry["big"] == 2**70
    assert entry["when"].startswith("2024-01-02")


def test_text_format_is_readable_and_names_the_request() -> None:
    stream = configured(format="text")

    with log_context(request_id="req-7"):
        LOG.warning("slow provider", extra={"seconds": 3})

    line = stream.getvalue().strip()
    assert "WARNING" in line
    assert "voltpay.tests.logging" in line
    assert "request_id=req-7" in line
    assert "slow provider" in line
    assert "seconds=3" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    tty = TtyStream()
    configure_logging(format="auto", level="INFO", stream=tty)
    LOG.info("to a person")
    assert not tty.getvalue().startswith("{")

    pipe = configured(format="auto")
    LOG.info("to a shipper")
    assert json_lines(pipe)[0]["message"] == "to a shipper"


def test_unknown_format_or_level_is_refused_without_dropping_the_old_handler() -> None:
    stream = configured()

    with pytest.raises(ValueError, match="xml"):
        configure_logging(format="xml", level="INFO", stream=io.StringIO())
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging(format="json", level="LOUD", stream=io.StringIO())
    LOG.info("still here")

    assert [entry["message"] for entry in json_lines(stream)] == ["still here"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login with password=hunter22", "hunter22"),
        ('{"password": "hunter22", "username": "ada"}', "hunter22"),
        ("{'auth_token': 'tw-abc123'}", "tw-abc123"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("sent with bearer abc123def", "abc123def"),
        ("TOKEN=t0k3n; next", "t0k3n"),
        ("api_key: k-42", "k-42"),
        ("secret_access_key=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ("GET /cb?token=abc123&page=2", "abc123"),
        ("connecting to postgres://voltpay:s3cr3t@db:5432/voltpay", "s3cr3t"),
    ],
)
def test_redact_masks_secret_values(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "***" in masked


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "bill b-1 paid: 5000 minor units, meter 12345678901"
    assert redact(text) == text
    assert redact("username=ada") == "username=ada"


def test_log_lines_mask_secrets_in_message_arguments_and_extras() -> None:
    stream = configured()

    LOG.info(
        "twilio answered password=%s with %s",
        "hunter22",
        "Bearer abc.def",
        extra={
            "auth_token": "plain-value",
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "json"},
            "detail": "retry with token=tok-1",
        },
    )

    [entry] = json_lines(stream)
    raw = stream.getvalue()
    for secret in ("hunter22", "abc.def", "plain-value", "dXNlcjpwYXNz", "tok-1"):
        assert secret not in raw
    assert entry["auth_token"] == "***"
    assert entry["headers"] == {"Authorization": "***", "Accept": "json"}
    assert entry["message"] == "twilio answered password=*** with Bearer ***"


def test_registered_secrets_are_masked_anywhere() -> None:
    secret = f"reg-{uuid.uuid4().hex}"
    register_secret(secret)
    stream = configured()

    try:
        raise RuntimeError(f"upstream refused {secret}")
    except RuntimeError:
        LOG.exception("call with %s failed", secret, extra={"note": [f"key {secret}"]})

    assert secret not in stream.getvalue()
    [entry] = json_lines(stream)
    assert entry["message"] == "call with *** failed"
    assert entry["note"] == ["key ***"]
    assert "upstream refused ***" in entry["exception"]


def test_registering_an_empty_secret_masks_nothing() -> None:
    register_secret("")
    assert redact("nothing to hide") == "nothing to hide"


def test_redaction_does_not_change_the_callers_extras() -> None:
    configured()
    headers = {"Authorization": "Bearer abc"}

    LOG.info("call", extra={"headers": headers})

    assert headers == {"Authorization": "Bearer abc"}


def test_a_broken_format_string_neither_raises_nor_leaks() -> None:
    stream = configured()
    # pytest's own capture handlers would trip over the record first.
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if type(h).__name__ == "_VoltpayHandler"]

    LOG.info("password=%s and %d", "hunter22")

    [entry] = json_lines(stream)
    assert "hunter22" not in stream.getvalue()
    assert "unformattable" in entry["message"]


def test_configure_is_idempotent() -> None:
    configured()
    stream = configured()

    LOG.info("once")

    handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "_VoltpayHandler"]
    assert len(handlers) == 1
    assert [entry["message"] for entry in json_lines(stream)] == ["once"]


def test_levels_voltpay_at_the_setting_and_everything_else_at_warning() -> None:
    stream = configured(level="DEBUG")

    LOG.debug("ours")
    logging.getLogger("botocore.endpoint").info("theirs")
    logging.getLogger("aiohttp.access").info("GET /healthz 200")
    logging.getLogger("werkzeug").info("moto request")
    logging.getLogger("botocore").warning("theirs, worth seeing")

    messages = [entry["message"] for entry in json_lines(stream)]
    assert messages == ["ours", "theirs, worth seeing"]
    assert logging.getLogger("aiohttp.access").level == logging.WARNING


def test_level_setting_filters_voltpay_debug_lines() -> None:
    stream = configured(level="info")

    LOG.debug("hidden")
    LOG.info("shown")

    assert [entry["message"] for entry in json_lines(stream)] == ["shown"]
