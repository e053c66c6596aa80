"""A 20-digit prepaid electricity token laid out as the STS (IEC 62055-41)
credit-transfer token, with a SIMULATED cipher.

SIMULATED: the data layout, amount encoding, token identifier and CRC follow
the standard, but the 64-bit block is scrambled with a keyed Feistel
permutation (HMAC-SHA256 round function) instead of the standard's
STA/DEA algorithms under a decoder key derived from a vending key. A real
meter will not accept these tokens; ``decode_token`` with the same key will.

Layout, most significant bit first::

    50 bits covered by the CRC:  class(2) | subclass(4) | rnd(4) | tid(24) | amount(16)
    64-bit data block:                      subclass(4) | rnd(4) | tid(24) | amount(16) | crc(16)

The 64-bit block is encrypted; then the two class bits, which travel in
clear, are inserted as the standard does: the encrypted block becomes bits
0-63 of a 66-bit number, encrypted bits 28 and 27 move to bits 65 and 64, and
the class takes their place (class bit 1 at bit 28, class bit 0 at bit 27).
The 66-bit number written as 20 decimal digits (zero-padded) is the token.

Two documented deviations from the standard:

* Amounts are rounded DOWN to the nearest encodable value (the standard rounds
  up in the customer's favour), so a token never credits more energy than was
  paid for.
* The default base date for the token identifier is 2014-01-01, not
  1993-01-01: 24 bits of minutes from 1993 ran out on 2024-11-24 (the STS
  "TID rollover"), after which the standard moved to the 2014 base date.
  ``BASE_DATE_1993`` stays available for dates before the rollover.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

TOKEN_CLASS_TRANSFER = 0
SUBCLASS_ELECTRICITY = 0

BASE_DATE_1993 = datetime(1993, 1, 1, tzinfo=UTC)
BASE_DATE_2014 = datetime(2014, 1, 1, tzinfo=UTC)

TOKEN_DIGITS = 20
MAX_TOKEN_IDENTIFIER = (1 << 24) - 1

_MANTISSA_BITS = 14
_MAX_MANTISSA = (1 << _MANTISSA_BITS) - 1
_MAX_EXPONENT = 3
_STEPS = (1, 10, 100, 1000)
# The standard offsets each exponent's range by the sizes of the ranges below
# it, so every 16-bit value means a different amount (no redundant encodings).
_EXPONENT_OFFSETS: tuple[int, ...] = tuple(
    sum((1 << _MANTISSA_BITS) * _STEPS[below] for below in range(exponent))
    for exponent in range(_MAX_EXPONENT + 1)
)
MAX_TRANSFER_AMOUNT = _EXPONENT_OFFSETS[_MAX_EXPONENT] + _MAX_MANTISSA * _STEPS[_MAX_EXPONENT]
"""The largest encodable amount, in tenths of a kWh (1,820,162.4 kWh)."""

_BLOCK_MASK = (1 << 64) - 1
_HALF_MASK = (1 << 32) - 1
_CLASS_BITS_SHIFT = 27
_CLASS_BITS_MASK = 0b11 << _CLASS_BITS_SHIFT
_FEISTEL_ROUNDS = 8
_TOKEN_NUMBER_LIMIT = 1 << 66
_ASCII_DIGITS = re.compile(r"[0-9]{20}")
_GROUPED_DIGITS = re.compile(r"[0-9]{4}(?:-[0-9]{4}){4}")
_HUNDREDTH = Decimal("0.01")


@dataclass(frozen=True)
class DecodedToken:
    token_class: int
    subclass: int
    random_nibble: int
    tid_minutes: int
    units_tenths_kwh: int
    crc_ok: bool


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS: polynomial 0x8005 (x^16 + x^15 + x^2 + 1) reflected,
    initial value 0xFFFF, no final XOR. Check value for b"123456789": 0x4B37.

    This is the STS checksum; the token stores it low byte first, see
    ``sts_checksum``.
    """
    register = 0xFFFF
    for byte in data:
        register ^= byte
        for _ in range(8):
            if register & 1:
                register = (register >> 1) ^ 0xA001  # 0x8005 bit-reversed
            else:
                register >>= 1
    return register


def sts_checksum(first_50_bits: int) -> int:
    """The CRC field of a token, computed over class, subclass, rnd, tid and
    amount: the 50 bits left-padded to 7 bytes, CRC-16/MODBUS, and the result
    stored low byte first (as Modbus sends it), which is how the STS
    Association's published example (50 bits 0x00004A2D900FF2 -> 0x0FFA) reads.
    """
    if not 0 <= first_50_bits < 1 << 50:
        raise ValueError("the checksummed data is 50 bits")
    register = crc16(first_50_bits.to_bytes(7, "big"))
    return ((register & 0xFF) << 8) | (register >> 8)


def encode_transfer_amount(units_tenths_kwh: int) -> int:
    """The 16-bit amount field (2-bit exponent, 14-bit mantissa) for an amount
    in tenths of a kWh, rounded down to the nearest encodable amount.

    Decoded amount = mantissa * 10**exponent + sum(2**14 * 10**(n-1), n=1..exponent).
    """
    if units_tenths_kwh < 0:
        raise ValueError("a transfer amount cannot be negative")
    if units_tenths_kwh > MAX_TRANSFER_AMOUNT:
        raise ValueError(
            f"{units_tenths_kwh} tenths of a kWh is above the largest token amount "
            f"({MAX_TRANSFER_AMOUNT})"
        )
    exponent = max(e for e, offset in enumerate(_EXPONENT_OFFSETS) if units_tenths_kwh >= offset)
    # Below the next exponent's offset the quotient stays within 14 bits.
    mantissa = (units_tenths_kwh - _EXPONENT_OFFSETS[exponent]) // _STEPS[exponent]
    return (exponent << _MANTISSA_BITS) | mantissa


def decode_transfer_amount(amount_field: int) -> int:
    """The amount, in tenths of a kWh, that a 16-bit amount field carries."""
    if not 0 <= amount_field <= 0xFFFF:
        raise ValueError("the amount field is 16 bits")
    exponent = amount_field >> _MANTISSA_BITS
    mantissa = amount_field & _MAX_MANTISSA
    return mantissa * _STEPS[exponent] + _EXPONENT_OFFSETS[exponent]


def token_identifier(issued_at: datetime, *, base_date: datetime = BASE_DATE_2014) -> int:
    """Whole minutes from the base date to ``issued_at`` (both timezone-aware)."""
    if issued_at.tzinfo is None or issued_at.utcoffset() is None:
        raise ValueError("issued_at must be timezone-aware")
    minutes = (issued_at - base_date) // timedelta(minutes=1)
    if not 0 <= minutes <= MAX_TOKEN_IDENTIFIER:
        raise ValueError(
            f"{issued_at.isoformat()} is outside the 24-bit token identifier range "
            f"from the base date {base_date.date().isoformat()}"
        )
    return minutes


def generate_token(
    units_tenths_kwh: int,
    issued_at: datetime,
    random_nibble: int,
    key: bytes,
    *,
    base_date: datetime = BASE_DATE_2014,
) -> str:
    """A SIMULATED 20-digit electricity credit token (not valid on a real meter).

    ``units_tenths_kwh`` is rounded down to the nearest encodable amount;
    amounts above ``MAX_TRANSFER_AMOUNT`` raise ValueError.
    """
    if not 0 <= random_nibble <= 0xF:
        raise ValueError("random_nibble must be between 0 and 15")
    _require_key(key)
    tid = token_identifier(issued_at, base_date=base_date)
    amount_field = encode_transfer_amount(units_tenths_kwh)
    checked = (
        (TOKEN_CLASS_TRANSFER << 48)
        | (SUBCLASS_ELECTRICITY << 44)
        | (random_nibble << 40)
        | (tid << 16)
        | amount_field
    )
    block = ((checked << 16) | sts_checksum(checked)) & _BLOCK_MASK
    number = _insert_class_bits(_encrypt(block, key), TOKEN_CLASS_TRANSFER)
    return f"{number:0{TOKEN_DIGITS}d}"


def decode_token(digits: str, key: bytes) -> DecodedToken:
    """Undo ``generate_token``: accepts the 20 digits, plain or in the
    five-group form. ``crc_ok`` is False for a mistyped token or a wrong key."""
    _require_key(key)
    if _GROUPED_DIGITS.fullmatch(digits):
        digits = digits.replace("-", "")
    if not _ASCII_DIGITS.fullmatch(digits):
        raise ValueError("a token is 20 digits")
    number = int(digits)
    if number >= _TOKEN_NUMBER_LIMIT:
        raise ValueError("not a token: the number is larger than 66 bits")
    token_class, encrypted = _remove_class_bits(number)
    block = _decrypt(encrypted, key)
    stored_crc = block & 0xFFFF
    checked = (token_class << 48) | (block >> 16)
    return DecodedToken(
        token_class=token_class,
        subclass=(block >> 60) & 0xF,
        random_nibble=(block >> 56) & 0xF,
        tid_minutes=(block >> 32) & MAX_TOKEN_IDENTIFIER,
        units_tenths_kwh=decode_transfer_amount((block >> 16) & 0xFFFF),
        crc_ok=sts_checksum(checked) == stored_crc,
    )


def format_token(digits: str) -> str:
    """ "12345678901234567890" -> "1234-5678-9012-3456-7890"."""
    if not _ASCII_DIGITS.fullmatch(digits):
        raise ValueError("a token is 20 digits")
    return "-".join(digits[start : start + 4] for start in range(0, TOKEN_DIGITS, 4))


def units_for_amount(amount_minor: int, tariff_minor_per_kwh: int) -> Decimal:
    """kWh bought by an amount at a tariff, both in minor units, rounded down
    to two places: units_for_amount(10000, 6800) == Decimal("1.47")."""
    if tariff_minor_per_kwh <= 0:
        raise ValueError("the tariff must be positive")
    if amount_minor < 0:
        raise ValueError("the amount cannot be negative")
    hundredths = amount_minor * 100 // tariff_minor_per_kwh
    return (Decimal(hundredths) / 100).quantize(_HUNDREDTH)


def _require_key(key: bytes) -> None:
    if not key:
        raise ValueError("the token key must not be empty")


def _round_function(key: bytes, round_index: int, half: int) -> int:
    digest = hmac.new(key, bytes([round_index]) + half.to_bytes(4, "big"), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big")


def _encrypt(block: int, key: bytes) -> int:
    left, right = block >> 32, block & _HALF_MASK
    for round_index in range(_FEISTEL_ROUNDS):
        left, right = right, left ^ _round_function(key, round_index, right)
    return (left << 32) | right


def _decrypt(block: int, key: bytes) -> int:
    left, right = block >> 32, block & _HALF_MASK
    for round_index in reversed(range(_FEISTEL_ROUNDS)):
        left, right = right ^ _round_function(key, round_index, left), left
    return (left << 32) | right


def _insert_class_bits(encrypted_block: int, token_class: int) -> int:
    displaced = (encrypted_block & _CLASS_BITS_MASK) >> _CLASS_BITS_SHIFT
    return (
        (displaced << 64)
        | (encrypted_block & ~_CLASS_BITS_MASK & _BLOCK_MASK)
        | (token_class << _CLASS_BITS_SHIFT)
    )


def _remove_class_bits(number: int) -> tuple[int, int]:
    token_class = (number & _CLASS_BITS_MASK) >> _CLASS_BITS_SHIFT
    displaced = number >> 64
    encrypted_block = (number & _BLOCK_MASK & ~_CLASS_BITS_MASK) | (displaced << _CLASS_BITS_SHIFT)
    return token_class, encrypted_block
