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


class PhoneNotSupported(DomainError):
    """The number is outside the prefixes that may receive an SMS."""


class TooSoon(DomainError):
    """A limit on how often something may be done was reached."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)


class TooManyLogins(TooSoon):
    """Too many failed logins (``voltpay.domain.logins``): wait, then try."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            f"too many failed logins; try again in {retry_after_seconds} s", retry_after_seconds
        )


class TooManySignups(TooSoon):
    """This client address registered as often as it may for now."""


class TooManyCodes(TooSoon):
    """No more one-time codes to this number, from this client, or today."""


class TooManyGuesses(TooSoon):
    """The code allowed no more wrong guesses: it is spent."""


class InvalidCode(DomainError):
    """Not the code that was sent, or no code was sent."""


class CodeExpired(DomainError):
    pass


class PhoneAlreadyVerified(DomainError):
    pass


class SmsUnavailable(DomainError):
    """The SMS provider could not take the message now; nothing was sent."""


class SmsRefused(DomainError):
    """The SMS provider refused the number for good."""
