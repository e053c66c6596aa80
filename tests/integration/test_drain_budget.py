"""The drain delay is part of the shutdown grace, not added to it."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import make_settings
from voltpay.daemon import runtime
from voltpay.daemon.runtime import CompositionRoot


async def test_in_flight_requests_get_what_the_delay_leaves_of_the_grace(
    database_url: str, moto_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: dict[str, Any] = {}
    real = runtime.GuardedRunner

    def recording_runner(*args: Any, **kwargs: Any) -> web.AppRunner:
        given.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "GuardedRunner", recording_runner)
    settings = make_settings(
        database_url,
        moto_server_url,
        http={"shutdown_grace_seconds": 5, "drain_delay_seconds": 0.5},
    )
    root = CompositionRoot(settings)
    try:
        await root.start()
    finally:
        await root.stop()
    assert given["shutdown_timeout"] == pytest.approx(4.5)


async def test_a_daemon_that_never_served_does_not_wait_out_the_delay(
    database_url: str, moto_server_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(
            database_url,
            moto_server_url,
            http={"port": port, "shutdown_grace_seconds": 30, "drain_delay_seconds": 20},
        )
        root = CompositionRoot(settings)
        with pytest.raises(OSError):
            await root.start()
        began = time.monotonic()
        await root.stop()
    # Nothing was served, so nothing waits for a load balancer to notice.
    assert time.monotonic() - began < 15
