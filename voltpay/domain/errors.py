"""Why a request is refused: one exception class per reason, raised where the
rule is checked and let through unchanged by the agents.

They know nothing of HTTP: ``voltpay.http.errors`` maps each class to its
status and problem code. The message is the detail a client reads.
"""

from __future__ import annotations


class DomainError(Exception):
    """A rule said no; nothing was changed."""

    @property
    def detail(self) -> str:
        return str(self)


class NotFound(DomainError):
    """No such thing, or not the caller's (the two are not told apart)."""


class BillNotFound(NotFound):
    pass


class WalletNotFound(NotFound):
    pass


class UsernameTaken(DomainError):
    pass


class TooManyLogins(DomainError):
    """Too many failed logins (``voltpay.domain.logins``): wait, then try."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class WrongCredentials(DomainError):
    """Unknown username or wrong password (the two are not told apart)."""


class PasswordRefused(DomainError):
    """A new password that may not be used (``voltpay.domain.passwords``)."""


class HashingBusy(DomainError):
    """Every password-hashing slot this client may use is taken: try again."""


class InsufficientFunds(DomainError):
    """The wallet does not cover the amount."""


class BalanceLimitReached(DomainError):
    """The credit would take the balance past what a wallet holds."""


class IdempotencyKeyBusy(DomainError):
    """Another request holds this Idempotency-Key's claim: try again shortly.
    Also raised when a request's own claim was gone at commit (released when
    it was cancelled, or taken over by a retry): nothing was changed."""


class AmountBelowMinimum(DomainError):
    pass


class AmountAboveMaximum(DomainError):
    pass


class BillNotPayable(DomainError):
    """Why a payment cannot start, as far as the bill goes."""


class BillAlreadyPaid(BillNotPayable):
    """Paid, or its payment is under way."""


class BillExpired(BillNotPayable):
    pass


class BillFailed(BillNotPayable):
    """Its payment failed and was refunded: the bill is done."""


class VendRefunded(DomainError):
    """The provider could not vend the bill; the payment was refunded."""


class SandboxCreditsOff(DomainError):
    """A credit without a payment, asked for outside the sandbox funding mode."""


class FundingNotFound(NotFound):
    pass


class CreditNotFound(NotFound):
    pass


class CreditAlreadyReversed(DomainError):
    pass


class GatewayUnavailable(DomainError):
    """The payment gateway could not be reached or answered nonsense; nothing
    was credited."""
