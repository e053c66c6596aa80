"""Register, prove the phone number, log in, log out, who am I."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from aiohttp import web

from voltpay.bridges.sms import SmsError, SmsMessage
from voltpay.domain import codes, phones
from voltpay.domain.errors import (
    DomainError,
    PhoneAlreadyVerified,
    PhoneNotSupported,
    SmsRefused,
    SmsUnavailable,
    UsernameTaken,
)
from voltpay.domain.events import rfc3339
from voltpay.http import auth
from voltpay.http.bodies import json_response, read_model
from voltpay.http.clients import client_address
from voltpay.http.context import TOKEN_DIGEST, Services, current_user, services
from voltpay.http.problems import Problem, unauthorized
from voltpay.http.schemas import LoginRequest, PhoneCodeRequest, RegisterRequest
from voltpay.models import phones as phone_store
from voltpay.models import users, wallets
from voltpay.models.tables import User

routes = web.RouteTableDef()
log = logging.getLogger("voltpay.http.users")


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    body = await read_model(request, RegisterRequest)
    svc = services(request)
    if not phones.allowed(body.phone_number, svc.settings.sms.allowed_prefixes):
        raise PhoneNotSupported(
            "phoneNumber: numbers starting "
            + ", ".join(svc.settings.sms.allowed_prefixes)
            + " only"
        )
    client = client_address(request, svc.settings.http.trusted_proxies)
    signup = await phone_store.reserve_signup(client, svc.settings.signup.per_client_per_hour)
    try:
        password_hash = await auth.hash_password(body.password)
        user, wallet, _ = await users.create_user(
            username=body.username,
            password_hash=password_hash,
            phone_number=body.phone_number,
            currency=svc.settings.limits.currency,
        )
    except UsernameTaken:
        await phone_store.forget_signup(signup)
        raise UsernameTaken("that username is already registered") from None
    except BaseException:
        await phone_store.forget_signup(signup)
        raise
    svc.wake_outbox()
    if svc.settings.signup.verify_phone:
        try:
            await _send_code(svc, user, client)
        except DomainError as exc:
            # Registered all the same: the user asks for a code again later.
            log.info("no code sent at registration: %s", type(exc).__name__)
    return json_response(
        {
            "userId": str(user.id),
            "username": user.username,
            "phoneNumber": user.phone_number,
            "walletId": str(wallet.id),
            "phoneVerified": False,
        },
        status=201,
    )


async def _send_code(svc: Services, user: User, client: str) -> None:
    """Issue a one-time code within the limits and text it, straight to the
    provider: it is never in an event, a notification row or a log line."""
    sms = svc.settings.sms
    limits = codes.CodeLimits(
        resend_seconds=sms.code_resend_seconds,
        per_number_per_day=sms.codes_per_number_per_day,
        per_client_per_hour=sms.codes_per_client_per_hour,
        per_day=sms.codes_per_day,
    )
    code = await phone_store.issue_code(
        user.id, user.phone_number, client, limits, sms.code_ttl_seconds
    )
    message = SmsMessage(
        user.phone_number,
        codes.code_sms(code, sms.code_ttl_seconds),
        f"code-{user.id}",
        secret=True,
    )
    try:
        await svc.sms_sender.send(message)
    except SmsError as exc:
        log.warning("the one-time code's SMS failed: %s", exc)
        if exc.permanent:
            raise SmsRefused("the SMS provider refused this number") from None
        raise SmsUnavailable("the code could not be sent now; try again shortly") from None


@routes.post("/api/auth/verify-phone")
async def verify_phone(request: web.Request) -> web.Response:
    body = await read_model(request, PhoneCodeRequest)
    user = current_user(request)
    if user.phone_verified:
        raise PhoneAlreadyVerified("this phone number is already verified")
    sms = services(request).settings.sms
    await phone_store.verify_code(
        user.id, user.phone_number, body.code, sms.code_max_guesses, sms.code_resend_seconds
    )
    return json_response({"phoneVerified": True})


@routes.post("/api/auth/verify-phone/resend")
async def resend_code(request: web.Request) -> web.Response:
    user = current_user(request)
    if user.phone_verified:
        raise PhoneAlreadyVerified("this phone number is already verified")
    svc = services(request)
    if not phones.allowed(user.phone_number, svc.settings.sms.allowed_prefixes):
        raise PhoneNotSupported("this phone number may not receive an SMS")
    await _send_code(svc, user, client_address(request, svc.settings.http.trusted_proxies))
    return web.Response(status=202)


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
            "phoneVerified": user.phone_verified,
        }
    )
