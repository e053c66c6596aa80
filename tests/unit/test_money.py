from __future__ import annotations

from decimal import Decimal

import pytest

from voltpay.domain.money import AmountError, format_minor, from_minor, parse_amount, to_minor


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Decimal("100.0"), Decimal("100.00")),
        ("100.00", Decimal("100.00")),
        ("0.01", Decimal("0.01")),
        (5, Decimal("5.00")),
        (" 7.5 ", Decimal("7.50")),
        ("\t7.50\r\n", Decimal("7.50")),
        (Decimal("1E+2"), Decimal("100.00")),
        (Decimal("100.000"), Decimal("100.00")),
        (Decimal("1.5000000000000000000000000000000000"), Decimal("1.50")),
    ],
)
def test_amounts_users_may_send(raw: object, expected: Decimal) -> None:
    assert parse_amount(raw) == expected
    assert parse_amount(raw).as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("1.234", "invalid_amount"),
        (Decimal("0.001"), "invalid_amount"),
        ("abc", "invalid_amount"),
        ("1e3", "invalid_amount"),
        # Only JSON's own whitespace around the digits, as the document says.
        ("\u00a07.5", "invalid_amount"),
        ("7.5\u3000", "invalid_amount"),
        ("7.5\x1c", "invalid_amount"),
        ("-5.00", "invalid_amount"),
        (Decimal("-5"), "amount_not_positive"),
        (0, "amount_not_positive"),
        ("0.00", "amount_not_positive"),
        (True, "invalid_amount"),
        (None, "invalid_amount"),
        ([1], "invalid_amount"),
        (1.5, "invalid_amount"),
        (Decimal("NaN"), "invalid_amount"),
        (Decimal("Infinity"), "invalid_amount"),
        ("NaN", "invalid_amount"),
        (Decimal("1E+300"), "amount_above_maximum"),
        # Exponents past any arithmetic context's limits: refused, never raised.
        (Decimal("1e999999999999"), "amount_above_maximum"),
        (Decimal("-1e999999999999"), "amount_not_positive"),
        (Decimal("1e-1000030"), "invalid_amount"),
        (Decimal("1e-999999999"), "invalid_amount"),
        (Decimal("0e-1000030"), "amount_not_positive"),
    ],
)
def test_amounts_refused_with_a_code(raw: object, code: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(raw)
    assert caught.value.code == code


def test_minor_units_round_trip_exactly() -> None:
    assert to_minor(Decimal("1000000.00")) == 100_000_000
    assert to_minor(Decimal("0.10")) == 10
    assert from_minor(12345) == Decimal("123.45")
    with pytest.raises(ValueError):
        to_minor(Decimal("0.005"))


@pytest.mark.parametrize(
    ("minor", "text"),
    [(0, "0.00"), (5, "0.05"), (150, "1.50"), (-250, "-2.50"), (10**12, "10000000000.00")],
)
def test_money_leaves_as_a_two_place_string(minor: int, text: str) -> None:
    assert format_minor(minor) == text
