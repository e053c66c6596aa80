"""The front every route is wrapped in: request ids, problem responses, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from voltpay.http.app import Front
from voltpay.http.context import Readiness
from voltpay.observability.logging import request_id_var
from voltpay.observability.metrics import Metrics


class RequestIds(logging.Handler):
    """The request id in the log context when each line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), request_id_var.get()))


@pytest.fixture
def lines() -> Iterator[RequestIds]:
    logger = logging.getLogger("voltpay.http")
    handler, level = RequestIds(), logger.level
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def failing(request: web.Request) -> web.Response:
    raise RuntimeError("boom")


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_a_failure_on_a_route_outside_the_api_is_logged_with_its_request_id(
    lines: RequestIds,
) -> None:
    logging.getLogger("voltpay.http").setLevel(logging.WARNING)
    front = Front(Metrics().http, Readiness()).wrap(failing, "/healthz")
    request = make_mocked_request("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    response = await front(request)
    assert response.status == 500
    assert response.headers["X-Request-ID"] == "abc-123"
    assert lines.seen == [("unhandled error on GET /healthz", "abc-123")]
    assert request_id_var.get() is None


async def test_the_access_line_carries_the_request_id(lines: RequestIds) -> None:
    logging.getLogger("voltpay.http").setLevel(logging.INFO)
    front = Front(Metrics().http, Readiness()).wrap(healthy, "/healthz")
    response = await front(make_mocked_request("GET", "/healthz"))
    generated = response.headers["X-Request-ID"]
    assert generated
    [(line, request_id)] = lines.seen
    assert line.startswith("GET /healthz -> 200 in ")
    assert request_id == generated
    assert request_id_var.get() is None


async def test_every_request_is_counted_under_its_route(lines: RequestIds) -> None:
    metrics = Metrics()
    front = Front(metrics.http, Readiness()).wrap(healthy, "/healthz")
    for _ in range(3):
        await front(make_mocked_request("GET", "/healthz"))
    body, _ = metrics.render()
    assert b'voltpay_http_requests_total{method="GET",route="/healthz",status="200"} 3.0' in body


async def test_answers_close_their_connection_once_draining_begins() -> None:
    readiness = Readiness()
    front = Front(Metrics().http, readiness).wrap(healthy, "/healthz")
    assert (await front(make_mocked_request("GET", "/healthz"))).keep_alive is not False
    readiness.draining = True
    assert (await front(make_mocked_request("GET", "/healthz"))).keep_alive is False


async def test_requests_in_flight_are_counted_until_answered_or_failed() -> None:
    metrics = Metrics()
    release = asyncio.Event()

    async def waits(request: web.Request) -> web.Response:
        await release.wait()
        if request.query.get("fail"):
            raise RuntimeError("boom")
        return web.json_response({})

    front = Front(metrics.http, Readiness()).wrap(waits, "/waits")
    calls = [
        asyncio.create_task(front(make_mocked_request("GET", path)))
        for path in ("/waits", "/waits?fail=1", "/waits")
    ]
    await asyncio.sleep(0)
    assert metrics.http.in_flight == 3
    body, _ = metrics.render()
    assert b"voltpay_http_requests_in_flight 3.0" in body
    release.set()
    statuses = sorted(response.status for response in await asyncio.gather(*calls))
    assert statuses == [200, 200, 500]
    assert metrics.http.in_flight == 0
    body, _ = metrics.render()
    assert b"voltpay_http_requests_in_flight 0.0" in body


async def test_a_flood_of_readiness_looks_runs_the_checks_once() -> None:
    looks = 0
    release = asyncio.Event()

    async def database() -> None:
        nonlocal looks
        looks += 1
        await release.wait()

    readiness = Readiness(checks={"database": database}, cache_seconds=60)
    asking = [asyncio.create_task(readiness.failing()) for _ in range(200)]
    await asyncio.sleep(0)
    release.set()
    assert all(found == [] for found in await asyncio.gather(*asking))
    assert await readiness.failing() == []
    assert looks == 1, "one look in flight, then its verdict kept"


async def test_a_readiness_verdict_is_looked_at_again_once_old() -> None:
    looks = 0

    async def sqs() -> None:
        nonlocal looks
        looks += 1
        raise ConnectionError("down")

    readiness = Readiness(checks={"sqs": sqs}, cache_seconds=0)
    assert await readiness.failing() == ["sqs"]
    assert await readiness.failing() == ["sqs"]
    assert looks == 2
