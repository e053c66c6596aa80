"""What an electricity vend comes to: its status, the token bought, and the
provider's record of one request.

Plain values with no I/O. They live in the domain, not beside the provider
port in ``voltpay.bridges.electricity``, because both sides of the simulated
provider's state use them: the bridge that vends and the database tables
that keep the record (``voltpay.models.simulated_provider``), and models
never import bridges.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class VendStatus(enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"
    PENDING = "pending"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class VendResult:
    request_id: str
    token: str
    """20 digits, unformatted; ``sts.format_token`` groups them for people."""
    units: Decimal
    """kWh bought, two places, rounded down."""
    tariff_minor_per_kwh: int
    receipt_number: str


@dataclass(frozen=True)
class VendRecord:
    """What a provider knows of one request id: the vend asked for and its
    outcome. ``result`` is set when ``status`` is SUCCESS, ``reason`` when it
    is FAILED."""

    meter_number: str
    amount_minor: int
    status: VendStatus
    result: VendResult | None = None
    reason: str | None = None
