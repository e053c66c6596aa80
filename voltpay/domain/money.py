"""Money at the edges is ``Decimal`` with two places; inside it is integer
minor units. Nothing here ever touches a float."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MINOR_PER_MAJOR = 100
_CENT = Decimal("0.01")
_TOO_LARGE = Decimal(10) ** 16
# A decimal string; around its digits, only the whitespace JSON itself
# allows between tokens (str.strip's set is wider, and regular expression
# engines disagree on what \s is). The OpenAPI document states this pattern.
DECIMAL_STRING_PATTERN = r"^[ \t\n\r]*[0-9]{1,16}(\.[0-9]{1,2})?[ \t\n\r]*$"
_BLANK = " \t\n\r"


class AmountError(ValueError):
    """An amount a user typed is unusable; ``code`` is the stable API name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_amount(value: object) -> Decimal:
    """Accept a JSON number (already a Decimal or int) or a decimal string.

    Rejects floats on purpose: the HTTP layer parses JSON numbers straight into
    Decimal, so a float here means a caller lost precision already.
    """
    if isinstance(value, bool):
        raise AmountError("invalid_amount", "amount must be a number or a decimal string")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        if not re.fullmatch(DECIMAL_STRING_PATTERN, value):
            raise AmountError("invalid_amount", 'amount must be a decimal string like "100.00"')
        try:
            amount = Decimal(value.strip(_BLANK))
        except InvalidOperation:  # pragma: no cover - the pattern excludes it
            raise AmountError("invalid_amount", "amount is not a number") from None
    else:
        raise AmountError("invalid_amount", "amount must be a number or a decimal string")
    if not amount.is_finite():
        raise AmountError("invalid_amount", "amount must be a finite number")
    if _places(amount) > 2:
        raise AmountError("invalid_amount", "amount has more than 2 decimal places")
    if amount <= 0:
        raise AmountError("amount_not_positive", "amount must be greater than 0")
    if amount >= _TOO_LARGE:
        raise AmountError("amount_above_maximum", "amount is far above any limit")
    return amount.quantize(_CENT)


def _places(amount: Decimal) -> int:
    """Decimal places of a finite amount, trailing zeros not counted, read
    off its digits: arithmetic (``normalize``) overflows on an exponent such
    as 1e999999999999, and a JSON number may carry one."""
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    text = "".join(map(str, digits))
    significant = text.rstrip("0")
    if not significant:  # zero has no places, however it is written
        return 0
    return max(0, -(exponent + len(text) - len(significant)))


def to_minor(amount: Decimal) -> int:
    """Exact conversion; an amount with more than two places is a bug upstream."""
    minor = amount * MINOR_PER_MAJOR
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} has more than 2 decimal places")
    return int(minor)


def from_minor(minor: int) -> Decimal:
    return (Decimal(minor) / MINOR_PER_MAJOR).quantize(_CENT)


def format_minor(minor: int) -> str:
    """The API's money form: a decimal string with exactly two places."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), MINOR_PER_MAJOR)
    return f"{sign}{whole}.{cents:02d}"
