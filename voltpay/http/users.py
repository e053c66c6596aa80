"""Register, log in, log out, who am I."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from aiohttp import web

from voltpay.domain.errors import UsernameTaken
from voltpay.domain.events import rfc3339
from voltpay.http import auth
from voltpay.http.bodies import json_response, read_model
from voltpay.http.context import TOKEN_DIGEST, current_user, services
from voltpay.http.problems import Problem, unauthorized
from voltpay.http.schemas import LoginRequest, RegisterRequest
from voltpay.models import users, wallets

routes = web.RouteTableDef()


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    body = await read_model(request, RegisterRequest)
    svc = services(request)
    password_hash = await auth.hash_password(body.password)
    try:
        user, wallet, _ = await users.create_user(
            username=body.username,
            password_hash=password_hash,
            phone_number=body.phone_number,
            currency=svc.settings.limits.currency,
        )
    except UsernameTaken:
        raise UsernameTaken("that username is already registered") from None
    svc.wake_outbox()
    return json_response(
        {
            "userId": str(user.id),
            "username": user.username,
            "phoneNumber": user.phone_number,
            "walletId": str(wallet.id),
        },
        status=201,
    )


async def _start_attempt(username: str, request: web.Request) -> None:
    """Count this attempt as a failure until its password proves right, or
    refuse it, uncounted, while the username is locked."""
    settings = services(request).settings.auth
    attempt, failures = await users.start_login_attempt(
        username, settings.failed_login_window_seconds
    )
    if len(failures) < settings.max_failed_logins:
        return
    await users.forget_login_attempt(attempt)
    unlock_at = failures[-settings.max_failed_logins] + timedelta(
        seconds=settings.failed_login_window_seconds
    )
    wait = max(1, math.ceil((unlock_at - datetime.now(UTC)).total_seconds()))
    raise Problem(
        429,
        "too_many_attempts",
        f"too many failed logins for this username; try again in {wait} s",
        headers={"Retry-After": str(wait)},
    )


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_model(request, LoginRequest)
    svc = services(request)
    await _start_attempt(body.username, request)
    user = await users.user_by_username(body.username)
    if not await auth.verify_password(user.password_hash if user else None, body.password):
        raise Problem(401, "invalid_credentials", "wrong username or password")
    assert user is not None
    if auth.needs_rehash(user.password_hash):
        await users.replace_password_hash(user.id, await auth.hash_password(body.password))
    await users.clear_failures(body.username)
    token = auth.new_token()
    expires_at = await users.open_session(
        user.id, auth.token_digest(token), svc.settings.auth.token_ttl_seconds
    )
    wallet_id = await wallets.primary_wallet_id(user.id)
    return json_response(
        {
            "token": token,
            "expiresAt": rfc3339(expires_at),
            "userId": str(user.id),
            "walletId": str(wallet_id),
        }
    )


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    digest = request.get(TOKEN_DIGEST)
    if digest is None:
        raise unauthorized()
    await users.close_session(digest)
    return web.Response(status=204)


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    wallet_id = await wallets.primary_wallet_id(user.id)
    return json_response(
        {
            "userId": str(user.id),
            "username": user.username,
            "phoneNumber": user.phone_number,
            "walletId": str(wallet_id),
        }
    )
