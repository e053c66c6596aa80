"""Register, prove the phone number, log in, log out, who am I."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web

from voltpay.bridges.sms import SmsError, SmsMessage
from voltpay.domain import codes, passwords, phones
from voltpay.domain.errors import (
    DomainError,
    PasswordRefused,
    PhoneAlreadyVerified,
    PhoneNotSupported,
    SmsRefused,
    SmsUnavailable,
    TooManyLogins,
    UsernameTaken,
    WrongCredentials,
)
from voltpay.domain.events import rfc3339
from voltpay.domain.logins import LoginLimits, wait_seconds
from voltpay.http import auth
from voltpay.http.bodies import json_response, read_model
from voltpay.http.context import TOKEN_DIGEST, Services, client_address, current_user, services
from voltpay.http.problems import unauthorized
from voltpay.http.schemas import (
    ChangePasswordRequest,
    LoginRequest,
    PhoneCodeRequest,
    RegisterRequest,
)
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
    refused = passwords.refusal(body.password, body.username)
    if refused is not None:
        raise PasswordRefused(refused)
    client = client_address(request)
    signup = await phone_store.reserve_signup(client, svc.settings.signup.per_client_per_hour)
    try:
        password_hash = await svc.hashing.hash(body.password, client)
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
    await _send_code(svc, user, client_address(request))
    return web.Response(status=202)


async def _start_attempt(username: str, client: str, request: web.Request) -> None:
    """Count this attempt as a failure until its password proves right, or
    refuse it, uncounted, while its account or its client must wait
    (``voltpay.domain.logins``)."""
    settings = services(request).settings.auth
    limits = LoginLimits(
        per_account_and_client=settings.max_failed_logins,
        per_client=settings.max_failed_logins_per_client,
        per_account=settings.max_failed_logins_per_account,
        window_seconds=settings.failed_login_window_seconds,
        first_delay_seconds=settings.login_delay_seconds,
    )
    attempt, failures = await users.start_login_attempt(
        username, client, settings.failed_login_window_seconds
    )
    wait = wait_seconds(failures, limits, datetime.now(UTC))
    if wait is None:
        return
    await users.forget_login_attempt(attempt)
    raise TooManyLogins(wait)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_model(request, LoginRequest)
    svc = services(request)
    client = client_address(request)
    await _start_attempt(body.username, client, request)
    user = await users.user_by_username(body.username)
    hashing = svc.hashing
    if not await hashing.verify(user.password_hash if user else None, body.password, client):
        raise WrongCredentials("wrong username or password")
    assert user is not None
    if auth.needs_rehash(user.password_hash):
        await users.replace_password_hash(user.id, await hashing.hash(body.password, client))
    await users.clear_failures(body.username, client)
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


@routes.post("/api/auth/logout-all")
async def logout_all(request: web.Request) -> web.Response:
    await users.close_sessions(current_user(request).id)
    return web.Response(status=204)


@routes.post("/api/auth/password")
async def change_password(request: web.Request) -> web.Response:
    """A new password, given the current one; every other session ends."""
    body = await read_model(request, ChangePasswordRequest)
    user = current_user(request)
    client = client_address(request)
    hashing = services(request).hashing
    if not await hashing.verify(user.password_hash, body.current_password, client):
        raise WrongCredentials("the current password is wrong")
    refused = passwords.refusal(body.new_password, user.username)
    if refused is not None:
        raise PasswordRefused(refused)
    new_hash = await hashing.hash(body.new_password, client)
    digest = request[TOKEN_DIGEST]
    await users.change_password(user.id, new_hash, keep=digest)
    return web.Response(status=204)


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
