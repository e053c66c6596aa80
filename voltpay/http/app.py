"""The aiohttp app factory and the middlewares every request passes."""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web

from voltpay.agents.mailbox import AgentFailure
from voltpay.domain.errors import DomainError, IdempotencyKeyBusy
from voltpay.http import auth, fundings, money, operations, users
from voltpay.http.bodies import read_body, replayed_body, stored_response
from voltpay.http.context import (
    CURRENT_USER,
    IDEMPOTENCY_CLAIM,
    SERVICES,
    TOKEN_DIGEST,
    Readiness,
    Services,
    client_address,
)
from voltpay.http.errors import problem_for
from voltpay.http.problems import Problem, not_found, unauthorized
from voltpay.http.schemas import IDEMPOTENCY_KEY_PATTERN
from voltpay.http.shares import Shares, hold_refused_connection
from voltpay.models import idempotency
from voltpay.models import users as user_store
from voltpay.models.users import OPERATOR
from voltpay.observability.logging import request_id_var
from voltpay.observability.metrics import HttpStats

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("voltpay.http")
# The gateway's webhook carries no bearer token: its signature is its auth.
PUBLIC_API = frozenset({"/api/auth/register", "/api/auth/login", fundings.WEBHOOK_PATH})
# A login's answer holds a bearer token, which voltpay otherwise keeps only as
# a hash: stored for replay, it would lie in the clear for a day. Logging in
# twice is harmless (a second session), so a login's key is checked, not kept;
# so is any key of a request made without a session (PUBLIC_API).
_NOT_STORED = frozenset({"/api/auth/login"})
_X_REQUEST_ID = hdrs.X_REQUEST_ID  # case-folded once, not on every request
_SERVER = hdrs.SERVER
_SERVER_NAME = "voltpay"  # no versions to fingerprint
_NOSNIFF = hdrs.X_CONTENT_TYPE_OPTIONS
_CACHE_CONTROL = hdrs.CACHE_CONTROL
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


_REQUEST_ID_PREFIX = secrets.token_hex(6)
_request_numbers = itertools.count(1)


def _new_request_id() -> str:
    # Unique per process by the counter, across processes by the random prefix;
    # far cheaper than a UUID on every request.
    return f"{_REQUEST_ID_PREFIX}-{next(_request_numbers):x}"


class Front:
    """Request id, problem responses, access log line, HTTP metrics and, for
    /api/ routes, authentication and idempotency, wrapped around each route's
    handler as the route is added.

    Not an aiohttp middleware: any middleware makes aiohttp run a second one
    of its own on every request, and the route's template and whether it is
    an /api/ route are known once, when the route is added, not looked up per
    request. Unmatched paths reach a catch-all route wrapped the same way.
    """

    def __init__(self, http: HttpStats, readiness: Readiness) -> None:
        self._http = http
        self._readiness = readiness

    def wrap(self, handler: Handler, template: str) -> Handler:
        record = self._http.route(template)
        api = template.startswith("/api/")
        unmatched = template == UNMATCHED
        logs = api or unmatched
        readiness = self._readiness
        http = self._http

        async def front(request: web.Request) -> web.StreamResponse:
            incoming = request.headers.get(_X_REQUEST_ID)
            request_id = incoming if incoming and _REQUEST_ID.match(incoming) else _new_request_id()
            # Only /api/ handlers (and the agents they ask) log while they
            # run; on other routes the request id enters the log context only
            # for the lines the front itself writes.
            token = request_id_var.set(request_id) if logs else None
            started = time.perf_counter()
            status = 500
            http.in_flight += 1
            try:
                try:
                    if api or (unmatched and request.path.startswith("/api/")):
                        response = await _api(request, handler)
                    else:
                        response = await handler(request)
                except Exception as exc:
                    if token is None:
                        token = request_id_var.set(request_id)
                    response = _problem_response(request, exc)
                status = response.status
                headers = response.headers
                headers[_X_REQUEST_ID] = request_id
                headers[_SERVER] = _SERVER_NAME
                headers[_NOSNIFF] = "nosniff"
                if api:
                    # Answers carry bearer tokens, prepaid tokens and balances.
                    headers[_CACHE_CONTROL] = "no-store"
                hold_refused_connection(request)
                if readiness.draining:
                    # Stopping: the client opens its next connection elsewhere.
                    response.force_close()
                return response
            finally:
                http.in_flight -= 1
                elapsed = time.perf_counter() - started
                record(request.method, status, elapsed)
                if log.isEnabledFor(logging.INFO):
                    if token is None:
                        token = request_id_var.set(request_id)
                    log.info(
                        "%s %s -> %s in %.1f ms",
                        request.method,
                        template,
                        status,
                        elapsed * 1000,
                        extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
                    )
                if token is not None:
                    request_id_var.reset(token)

        return front

    def add_routes(self, app: web.Application, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Each route with its path as the metrics' route template (no path of
        ours has a regular expression in it)."""
        for route in routes:
            if not isinstance(route, web.RouteDef):
                raise TypeError(f"only plain routes are wrapped, not {route!r}")
            wrapped = web.RouteDef(
                route.method, route.path, self.wrap(route.handler, route.path), route.kwargs
            )
            wrapped.register(app.router)

    def add_catch_all(self, app: web.Application) -> None:
        """Last, at the root of the path index: paths no route matches."""
        app.router.add_route("*", "/{path:.*}", self.wrap(_unmatched, UNMATCHED))


UNMATCHED = "unmatched"


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """404, or 405 with Allow when another route serves the path."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def _problem_response(request: web.Request, error: Exception) -> web.StreamResponse:
    """Every failure leaves as problem+json; nothing a client sends yields a 5xx."""
    if isinstance(error, Problem):
        return error.response()
    refusal = problem_for(error)
    if refusal is not None:
        return refusal.response()
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        limit = request.app[SERVICES].settings.http.max_body_bytes
        return Problem(
            413, "payload_too_large", f"request bodies are limited to {limit} bytes"
        ).response()
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            return error
        code = error.reason.lower().replace(" ", "_") if error.reason else "http_error"
        return Problem(
            error.status,
            code,
            error.text or error.reason or "error",
            headers={k: v for k, v in error.headers.items() if k.lower() == "allow"},
        ).response()
    if isinstance(error, AgentFailure):
        log.error("an agent failed while answering %s %s", request.method, request.path)
    else:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return Problem(500, "internal_error", "something went wrong on our side").response()


SHARES = web.AppKey("shares", Shares)


async def _api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer authentication, the sender's share, then Idempotency-Key, for
    /api/ routes only."""
    path = request.path
    shares = request.app[SHARES]
    if path in PUBLIC_API or path == "/api/agents":
        async with shares.taken_by_client(request, client_address(request)):
            return await _idempotent(request, handler)
    digest = _bearer_digest(request)
    with shares.taken_by_token(request, digest):
        await _authenticate(request, digest)
        user = request[CURRENT_USER]
        if path.startswith(fundings.ADMIN_PREFIX) and user.role != OPERATOR:
            # To anyone but an operator the operators' routes do not exist.
            raise not_found()
        async with shares.taken(request, str(user.id)):
            return await _idempotent(request, handler)


def _bearer_digest(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized()
    if not token.isascii():  # no token voltpay issues is anything else
        raise unauthorized("the token is unknown, expired or logged out")
    return auth.token_digest(token)


async def _authenticate(request: web.Request, digest: str) -> None:
    user = await user_store.session_user(digest)
    if user is None:
        raise unauthorized("the token is unknown, expired or logged out")
    request[CURRENT_USER] = user
    request[TOKEN_DIGEST] = digest


async def _idempotent(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or key is None:
        return await handler(request)
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 printable ASCII characters",
        )
    user = request.get(CURRENT_USER)
    if user is None or request.path in _NOT_STORED:
        # Keys are a user's own: a stranger's request has no answer to keep,
        # and two strangers' keys must not collide.
        return await handler(request)
    scope = str(user.id)
    body = await read_body(request)
    digest = hashlib.sha256(
        request.method.encode() + b" " + request.path.encode() + b"\n" + body
    ).hexdigest()
    services = request.app[SERVICES]
    ttl = services.settings.limits.idempotency_ttl_seconds
    claim, stored = await idempotency.claim(scope, key, digest, ttl, holder=services.instance_id)
    if claim is idempotency.Claim.MISMATCH:
        raise Problem(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    if claim is idempotency.Claim.IN_PROGRESS:
        raise IdempotencyKeyBusy("another request holds this Idempotency-Key")
    if claim is idempotency.Claim.REPLAY and stored is not None:
        return web.Response(
            status=stored.status,
            body=await replayed_body(stored),
            headers={"Content-Type": stored.content_type, "Idempotent-Replayed": "true"},
        )
    request[IDEMPOTENCY_CLAIM] = idempotency.Key(scope, key)
    try:
        response = await _render(request, handler)
    except BaseException:
        await idempotency.release(scope, key)
        raise
    if response.status >= 400:
        # A refused request changed nothing: the key may be used again.
        await idempotency.release(scope, key)
        return response
    assert isinstance(response, web.Response)
    await idempotency.store(scope, key, stored_response(response))
    return response


async def _render(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler and turn errors into responses here, so they are stored."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except DomainError as exc:
        refusal = problem_for(exc)
        assert refusal is not None  # DomainError itself has a row
        return refusal.response()


def create_app(services: Services) -> web.Application:
    """The main listener's app: the API, health, and the operators' routes
    unless an operations listener serves them (``ops_app``)."""
    tables = [
        users.routes,
        money.routes,
        fundings.routes,
        operations.routes,
        operations.health_routes,
    ]
    if services.settings.ops.port is None:
        tables.append(operations.ops_routes)
    return _app(services, tables)


def ops_app(services: Services) -> web.Application:
    """The operations listener's app: metrics, agents and health."""
    return _app(services, [operations.ops_routes, operations.health_routes])


def _app(services: Services, tables: list[web.RouteTableDef]) -> web.Application:
    app = web.Application(
        client_max_size=services.settings.http.max_body_bytes,
        handler_args={"max_field_size": 16384},
    )
    app[SERVICES] = services
    http = services.settings.http
    app[SHARES] = Shares(
        per_user=http.max_in_flight_per_user,
        per_client=http.max_in_flight_per_client,
        running=http.max_running_per_user,
    )
    front = Front(services.metrics.http, services.readiness)
    for routes in tables:
        front.add_routes(app, routes)
    front.add_catch_all(app)
    return app
