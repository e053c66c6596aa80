"""moto's server over HTTP for the tests that speak the real SNS/SQS API.

Wire it into a conftest as a session-scoped fixture, once per test run:

    from tests.fakes.moto_server import moto_server_fixture

    moto_server_url = moto_server_fixture()

moto keeps one global state per process, so tests sharing the server must use
their own (uuid-named) topics and queues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pytest

from voltpay.bridges.moto_server import MotoServer

Scope = Literal["session", "package", "module", "class", "function"]


@contextmanager
def running_moto_server() -> Iterator[str]:
    """Start moto's server on a free loopback port; yield its URL; stop it."""
    endpoint = MotoServer()
    url = endpoint.start()
    try:
        yield url
    finally:
        # A test may leave a cancelled long poll behind; it ends by itself.
        endpoint.stop(grace_seconds=0.5)


def moto_server_fixture(
    scope: Scope = "session", name: str = "moto_server_url"
) -> Callable[..., Any]:
    """A pytest fixture (named ``name``) yielding a running moto server's URL."""

    def _moto_server_url() -> Iterator[str]:
        with running_moto_server() as url:
            yield url

    return pytest.fixture(scope=scope, name=name)(_moto_server_url)
