"""The bill's life, as plain rules: which moves are allowed and when."""

from __future__ import annotations

import enum
from datetime import datetime

from voltpay.domain.errors import BillAlreadyPaid, BillExpired, BillFailed


class BillStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"


ALLOWED_MOVES: dict[BillStatus, frozenset[BillStatus]] = {
    BillStatus.PENDING: frozenset({BillStatus.PROCESSING, BillStatus.EXPIRED}),
    BillStatus.PROCESSING: frozenset({BillStatus.PAID, BillStatus.FAILED}),
    BillStatus.PAID: frozenset(),
    BillStatus.EXPIRED: frozenset(),
    BillStatus.FAILED: frozenset(),
}


def can_move(current: BillStatus, target: BillStatus) -> bool:
    return target in ALLOWED_MOVES[current]


def effective_status(status: BillStatus, expires_at: datetime, now: datetime) -> BillStatus:
    """A pending bill past its expiry is expired even before a sweep records it."""
    if status is BillStatus.PENDING and now >= expires_at:
        return BillStatus.EXPIRED
    return status


def check_payable(status: BillStatus, expires_at: datetime, now: datetime) -> None:
    current = effective_status(status, expires_at, now)
    if current is BillStatus.PENDING:
        return
    if current is BillStatus.PAID:
        raise BillAlreadyPaid("this bill has already been paid")
    if current is BillStatus.PROCESSING:
        raise BillAlreadyPaid("a payment for this bill is already being processed")
    if current is BillStatus.EXPIRED:
        raise BillExpired("this bill has expired; verify the meter again")
    raise BillFailed("this bill's payment failed and was refunded; verify again")
