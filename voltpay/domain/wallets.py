"""A wallet's balance rules: it never goes below zero, and never past what a
wallet holds. The database's conditional updates are built to the same rules
(``voltpay.models.wallets``), and a test holds the two to each other."""

from __future__ import annotations

# The largest balance a BIGINT (PostgreSQL) or INTEGER (SQLite) holds. Past
# it PostgreSQL refuses the UPDATE and SQLite turns the sum into a float.
MAX_BALANCE_MINOR = 2**63 - 1


def may_debit(balance_minor: int, amount_minor: int) -> bool:
    return 0 < amount_minor <= balance_minor


def may_credit(balance_minor: int, amount_minor: int) -> bool:
    return amount_minor > 0 and balance_minor <= MAX_BALANCE_MINOR - amount_minor
