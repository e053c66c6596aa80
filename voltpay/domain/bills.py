"""The bill's life, as plain rules: which moves are allowed and when."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from voltpay.domain.errors import BillAlreadyPaid, BillExpired, BillFailed


class BillStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"


class Expiry(enum.Enum):
    """Where a move stands to the bill's expiry."""

    ANY = "any"
    BEFORE = "before"  # only while now < expires_at
    AFTER = "after"  # only once now >= expires_at


@dataclass(frozen=True)
class Move:
    """One move of a bill's life: from the one status it leaves to the one it
    reaches, and when. Each move is stated here once; the database's
    conditional updates are built from it (``voltpay.models.bills``), so that
    only one of several concurrent callers makes it."""

    source: BillStatus
    target: BillStatus
    expiry: Expiry = Expiry.ANY

    def allows(self, status: BillStatus, expires_at: datetime, now: datetime) -> bool:
        if status is not self.source:
            return False
        if self.expiry is Expiry.BEFORE:
            return now < expires_at
        if self.expiry is Expiry.AFTER:
            return now >= expires_at
        return True


START_PAYMENT = Move(BillStatus.PENDING, BillStatus.PROCESSING, Expiry.BEFORE)
COMPLETE_PAYMENT = Move(BillStatus.PROCESSING, BillStatus.PAID)
FAIL_PAYMENT = Move(BillStatus.PROCESSING, BillStatus.FAILED)
EXPIRE = Move(BillStatus.PENDING, BillStatus.EXPIRED, Expiry.AFTER)
# Every move a bill makes: no other change of status happens.
MOVES = (START_PAYMENT, COMPLETE_PAYMENT, FAIL_PAYMENT, EXPIRE)


def effective_status(status: BillStatus, expires_at: datetime, now: datetime) -> BillStatus:
    """A pending bill past its expiry is expired even before a sweep records it."""
    if EXPIRE.allows(status, expires_at, now):
        return EXPIRE.target
    return status


def check_payable(status: BillStatus, expires_at: datetime, now: datetime) -> None:
    """Nothing when a payment may start now (``START_PAYMENT``); otherwise why not."""
    if START_PAYMENT.allows(status, expires_at, now):
        return
    current = effective_status(status, expires_at, now)
    if current is BillStatus.PAID:
        raise BillAlreadyPaid("this bill has already been paid")
    if current is BillStatus.PROCESSING:
        raise BillAlreadyPaid("a payment for this bill is already being processed")
    if current is BillStatus.EXPIRED:
        raise BillExpired("this bill has expired; verify the meter again")
    raise BillFailed("this bill's payment failed and was refunded; verify again")
