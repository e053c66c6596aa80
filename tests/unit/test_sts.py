from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from voltpay.domain import sts

KEY = b"unit-test-token-key"
ISSUED_AT = datetime(2026, 11, 27, 9, 42, 30, tzinfo=UTC)


def test_crc16_matches_the_published_modbus_check_value() -> None:
    assert sts.crc16(b"123456789") == 0x4B37


def test_sts_checksum_matches_the_sts_association_example() -> None:
    # Published on sts.org.za: the 50 bits 0 00 4A 2D 90 0F F2 have CRC 0FFA.
    assert sts.sts_checksum(0x00_4A_2D_90_0F_F2) == 0x0FFA


def test_sts_checksum_rejects_more_than_50_bits() -> None:
    with pytest.raises(ValueError):
        sts.sts_checksum(1 << 50)


# Amounts the field carries exactly; rounding has its own tests below.
@pytest.mark.parametrize("units", [0, 1, 14, 16383, 16384, 73524, 180224, sts.MAX_TRANSFER_AMOUNT])
@pytest.mark.parametrize("nibble", [0, 9, 15])
def test_decoding_a_generated_token_gives_back_its_fields(units: int, nibble: int) -> None:
    token = sts.generate_token(units, ISSUED_AT, nibble, KEY)

    decoded = sts.decode_token(token, KEY)

    assert len(token) == 20
    assert token.isascii()
    assert token.isdigit()
    assert decoded == sts.DecodedToken(
        token_class=sts.TOKEN_CLASS_TRANSFER,
        subclass=sts.SUBCLASS_ELECTRICITY,
        random_nibble=nibble,
        tid_minutes=sts.token_identifier(ISSUED_AT),
        units_tenths_kwh=units,
        crc_ok=True,
    )


def test_the_token_identifier_counts_whole_minutes_since_the_base_date() -> None:
    issued_at = sts.BASE_DATE_2014 + timedelta(minutes=1000, seconds=59)

    token = sts.generate_token(10, issued_at, 0, KEY)

    assert sts.decode_token(token, KEY).tid_minutes == 1000


def test_the_1993_base_date_works_before_its_rollover() -> None:
    issued_at = datetime(2020, 1, 1, tzinfo=UTC)
    token = sts.generate_token(10, issued_at, 3, KEY, base_date=sts.BASE_DATE_1993)

    expected_minutes = (issued_at - sts.BASE_DATE_1993) // timedelta(minutes=1)
    assert sts.decode_token(token, KEY).tid_minutes == expected_minutes


def test_the_1993_base_date_ran_out_of_token_identifiers() -> None:
    with pytest.raises(ValueError, match="24-bit"):
        sts.generate_token(10, ISSUED_AT, 0, KEY, base_date=sts.BASE_DATE_1993)


def test_a_time_before_the_base_date_is_rejected() -> None:
    with pytest.raises(ValueError):
        sts.generate_token(10, datetime(2013, 12, 31, 23, 59, tzinfo=UTC), 0, KEY)


def test_a_naive_issue_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        sts.generate_token(10, datetime(2026, 1, 1), 0, KEY)


def test_the_issue_time_is_compared_in_utc() -> None:
    lagos = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 27, 10, 42, 30, tzinfo=lagos)

    assert sts.token_identifier(local) == sts.token_identifier(ISSUED_AT)


@pytest.mark.parametrize("nibble", [-1, 16])
def test_the_random_number_is_a_nibble(nibble: int) -> None:
    with pytest.raises(ValueError):
        sts.generate_token(10, ISSUED_AT, nibble, KEY)


def test_an_empty_key_is_rejected() -> None:
    with pytest.raises(ValueError):
        sts.generate_token(10, ISSUED_AT, 0, b"")


def test_the_random_number_changes_the_token() -> None:
    tokens = {sts.generate_token(100, ISSUED_AT, nibble, KEY) for nibble in range(16)}

    assert len(tokens) == 16


def test_the_wrong_key_fails_the_crc() -> None:
    token = sts.generate_token(100, ISSUED_AT, 7, KEY)

    assert sts.decode_token(token, b"some-other-key").crc_ok is False


def test_a_mistyped_digit_fails_the_crc() -> None:
    token = sts.generate_token(100, ISSUED_AT, 7, KEY)
    last = "1" if token[-1] != "1" else "2"

    assert sts.decode_token(token[:-1] + last, KEY).crc_ok is False


def test_the_class_travels_in_clear_at_bits_28_and_27() -> None:
    token = sts.generate_token(100, ISSUED_AT, 7, KEY)
    genuine = sts.decode_token(token, KEY)

    tampered = sts.decode_token(f"{int(token) ^ (1 << 27):020d}", KEY)

    # The encrypted block is untouched, so only the class changes, and the
    # class is covered by the CRC.
    assert tampered.token_class == 1
    assert tampered.units_tenths_kwh == genuine.units_tenths_kwh
    assert tampered.tid_minutes == genuine.tid_minutes
    assert tampered.crc_ok is False


def test_a_grouped_token_decodes_like_the_plain_digits() -> None:
    token = sts.generate_token(100, ISSUED_AT, 7, KEY)

    assert sts.decode_token(sts.format_token(token), KEY) == sts.decode_token(token, KEY)


@pytest.mark.parametrize(
    "digits",
    ["", "1234567890123456789", "123456789012345678901", "1234567890123456789a", "9" * 20],
)
def test_decode_rejects_what_is_not_a_token(digits: str) -> None:
    with pytest.raises(ValueError):
        sts.decode_token(digits, KEY)


@pytest.mark.parametrize(
    ("units", "field", "decoded"),
    [
        (0, 0x0000, 0),
        (16383, 0x3FFF, 16383),  # largest with exponent 0
        (16384, 0x4000, 16384),  # exponent 1 starts
        (16393, 0x4000, 16384),  # rounded down to a step of 10
        (16394, 0x4001, 16394),
        (180214, 0x7FFF, 180214),  # largest with exponent 1
        (180223, 0x7FFF, 180214),  # between the ranges: rounded down
        (180224, 0x8000, 180224),  # exponent 2 starts
        (180323, 0x8000, 180224),  # rounded down to a step of 100
        (1818624, 0xC000, 1818624),  # exponent 3 starts
        (sts.MAX_TRANSFER_AMOUNT, 0xFFFF, 18201624),
    ],
)
def test_amount_encoding_at_the_boundaries(units: int, field: int, decoded: int) -> None:
    assert sts.encode_transfer_amount(units) == field
    assert sts.decode_transfer_amount(field) == decoded


def test_amount_encoding_never_credits_more_than_asked() -> None:
    for units in range(0, sts.MAX_TRANSFER_AMOUNT, 997):
        credited = sts.decode_transfer_amount(sts.encode_transfer_amount(units))
        step = 10 ** (sts.encode_transfer_amount(units) >> 14)
        assert units - step < credited <= units


@pytest.mark.parametrize("units", [-1, sts.MAX_TRANSFER_AMOUNT + 1])
def test_amounts_outside_the_encodable_range_are_rejected(units: int) -> None:
    with pytest.raises(ValueError):
        sts.encode_transfer_amount(units)
    with pytest.raises(ValueError):
        sts.generate_token(units, ISSUED_AT, 0, KEY)


def test_a_rounded_amount_is_what_the_token_carries() -> None:
    token = sts.generate_token(16399, ISSUED_AT, 0, KEY)

    assert sts.decode_token(token, KEY).units_tenths_kwh == 16394


def test_format_token_groups_the_digits_in_fours() -> None:
    assert sts.format_token("12345678901234567890") == "1234-5678-9012-3456-7890"


@pytest.mark.parametrize(
    "digits",
    [
        "1234567890123456789",
        "123456789012345678901",
        "1234-5678-9012-3456-7890",
        "1234567890123456789x",
        "\u0663" * 20,  # Arabic-Indic digits pass str.isdigit
    ],
)
def test_format_token_rejects_anything_but_20_digits(digits: str) -> None:
    with pytest.raises(ValueError):
        sts.format_token(digits)


@pytest.mark.parametrize(
    ("amount_minor", "tariff_minor", "units"),
    [
        (10000, 6800, "1.47"),  # 1.470588... rounded down
        (6800, 6800, "1.00"),
        (6799, 6800, "0.99"),
        (1000, 6800, "0.14"),
        (0, 6800, "0.00"),
        (50000000, 6800, "7352.94"),
    ],
)
def test_units_for_amount_rounds_down_to_two_places(
    amount_minor: int, tariff_minor: int, units: str
) -> None:
    result = sts.units_for_amount(amount_minor, tariff_minor)

    assert result == Decimal(units)
    assert str(result) == units


def test_units_for_amount_rejects_a_zero_tariff() -> None:
    with pytest.raises(ValueError):
        sts.units_for_amount(10000, 0)
