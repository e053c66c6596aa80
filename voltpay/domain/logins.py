"""When a login attempt is refused before its password is checked.

Failed logins are counted three ways within a window: for the account from
this client address, from this client address over every account (password
spraying), and for the account from everywhere (a wide attack, at NIST SP
800-63B's ceiling of 100). Past a limit, each further attempt waits a delay
that doubles with every failure over it, up to the window, counted from the
last failure. The owner, from another address, is held back only by the
last count, which one address cannot fill alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class LoginLimits:
    per_account_and_client: int
    per_client: int
    per_account: int
    window_seconds: int
    first_delay_seconds: float


@dataclass(frozen=True)
class Failures:
    """Failed logins within the window, counted three ways; when the last was."""

    account_and_client: int
    client: int
    account: int
    last: datetime | None


def wait_seconds(failures: Failures, limits: LoginLimits, now: datetime) -> int | None:
    """How long this attempt must wait, in whole seconds; None to go ahead."""
    over = max(
        failures.account_and_client - limits.per_account_and_client,
        failures.client - limits.per_client,
        failures.account - limits.per_account,
    )
    if over < 0 or failures.last is None:
        return None
    delay = min(limits.first_delay_seconds * 2 ** min(over, 32), limits.window_seconds)
    remaining = (failures.last + timedelta(seconds=delay) - now).total_seconds()
    return math.ceil(remaining) if remaining > 0 else None
