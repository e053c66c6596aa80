"""Each refusal's status and problem code: the one table that turns the
domain's exceptions (and the agents' own refusals) into problem responses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voltpay.agents.mailbox import Overloaded, Stopped
from voltpay.domain import errors, vending
from voltpay.http.problems import Problem


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    # Headers the answer carries, made from the exception.
    headers: Callable[[Exception], dict[str, str]] = field(default=lambda _: {})
    # What the client reads, when not the exception's own message.
    detail: str | None = None


def _retry_after(seconds: int) -> Callable[[Exception], dict[str, str]]:
    return lambda _: {"Retry-After": str(seconds)}


def _wait(error: Exception) -> dict[str, str]:
    assert isinstance(error, errors.TooSoon)
    return {"Retry-After": str(error.retry_after_seconds)}


def _overloaded_retry(error: Exception) -> dict[str, str]:
    assert isinstance(error, Overloaded)
    return {"Retry-After": str(error.retry_after_seconds)}


REFUSALS: dict[type[Exception], Refusal] = {
    # Every refusal of the domain has a row of its own; this one is the
    # floor under them, so no refusal ever answers 5xx.
    errors.DomainError: Refusal(422, "refused"),
    errors.NotFound: Refusal(404, "not_found"),
    errors.UsernameTaken: Refusal(409, "username_taken"),
    errors.TooManyLogins: Refusal(429, "too_many_attempts", _wait),
    errors.WrongCredentials: Refusal(
        401, "invalid_credentials", detail="wrong username or password"
    ),
    errors.PasswordRefused: Refusal(422, "weak_password"),
    errors.HashingBusy: Refusal(
        503, "busy", _retry_after(1), "too many logins at once; try again in a second"
    ),
    errors.InsufficientFunds: Refusal(402, "insufficient_funds"),
    errors.BalanceLimitReached: Refusal(422, "balance_limit_reached"),
    errors.IdempotencyKeyBusy: Refusal(
        409,
        "idempotency_in_progress",
        _retry_after(1),
        "a request with this Idempotency-Key is still being processed",
    ),
    errors.AmountBelowMinimum: Refusal(422, "amount_below_minimum"),
    errors.AmountAboveMaximum: Refusal(422, "amount_above_maximum"),
    errors.BillAlreadyPaid: Refusal(409, "bill_already_paid"),
    errors.BillExpired: Refusal(410, "bill_expired"),
    errors.BillFailed: Refusal(409, "bill_not_payable"),
    errors.VendRefunded: Refusal(502, "vend_failed"),
    errors.SandboxCreditsOff: Refusal(403, "sandbox_credits_off"),
    errors.CreditAlreadyReversed: Refusal(409, "credit_already_reversed"),
    errors.GatewayUnavailable: Refusal(502, "gateway_unavailable"),
    errors.PhoneNotSupported: Refusal(422, "phone_not_supported"),
    errors.TooSoon: Refusal(429, "too_many_requests", _wait),
    errors.TooManySignups: Refusal(429, "too_many_signups", _wait),
    errors.TooManyCodes: Refusal(429, "too_many_codes", _wait),
    errors.TooManyGuesses: Refusal(429, "too_many_attempts", _wait),
    errors.InvalidCode: Refusal(422, "invalid_code"),
    errors.CodeExpired: Refusal(410, "code_expired"),
    errors.PhoneAlreadyVerified: Refusal(409, "phone_already_verified"),
    errors.SmsUnavailable: Refusal(503, "sms_unavailable", _retry_after(30)),
    errors.SmsRefused: Refusal(422, "phone_not_supported"),
    vending.InvalidMeterNumber: Refusal(422, "invalid_meter_number"),
    vending.MeterNotFound: Refusal(422, "meter_not_found"),
    vending.ProviderUnavailable: Refusal(503, "provider_unavailable"),
    Overloaded: Refusal(503, "overloaded", _overloaded_retry),
    Stopped: Refusal(503, "shutting_down", _retry_after(5), "the service is restarting"),
}


def problem_for(error: Exception) -> Problem | None:
    """The problem a refusal answers with (looked up by the exception's class,
    then its bases), or None when the error is no refusal of ours."""
    for kind in type(error).__mro__:
        refusal = REFUSALS.get(kind)
        if refusal is not None:
            detail = refusal.detail or str(error)
            return Problem(refusal.status, refusal.code, detail, headers=refusal.headers(error))
    return None
