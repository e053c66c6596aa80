"""What an electricity vend comes to: its status, the token bought, the
provider's record of one request, and the errors the provider port raises
(the meter ones are domain errors: a client's request is refused).

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

from voltpay.domain.errors import DomainError


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


class ProviderError(Exception):
    """Base of every error the provider port raises."""


class InvalidMeterNumber(ProviderError, DomainError):
    def __init__(self, meter_number: str) -> None:
        super().__init__(
            f"{meter_number!r} is not a meter number (11 digits, or a letter and 6 digits)"
        )
        self.meter_number = meter_number


class MeterNotFound(ProviderError, DomainError):
    def __init__(self, meter_number: str) -> None:
        super().__init__(f"meter {meter_number} is not known to the provider")
        self.meter_number = meter_number


class ProviderUnavailable(ProviderError, DomainError):
    """The provider could not be reached: nothing happened there."""


class VendFailed(ProviderError):
    """The provider confirmed that nothing was vended: safe to refund."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VendOutcomeUnknown(ProviderError):
    """No usable answer (timeout, garbled reply): the vend may have happened.
    Never refund on this; ask ``requery`` with the same request id."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"the outcome of vend {request_id} is unknown")
        self.request_id = request_id
