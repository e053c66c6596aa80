"""When a login waits, and which passwords are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voltpay.domain import passwords
from voltpay.domain.logins import Failures, LoginLimits, wait_seconds

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LIMITS = LoginLimits(
    per_account_and_client=5,
    per_client=20,
    per_account=100,
    window_seconds=300,
    first_delay_seconds=30,
)


def _failures(pair: int = 0, client: int = 0, account: int = 0, ago: float = 0) -> Failures:
    return Failures(pair, client, account, NOW - timedelta(seconds=ago))


def test_under_every_limit_an_attempt_goes_ahead() -> None:
    assert wait_seconds(_failures(4, 19, 99), LIMITS, NOW) is None


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        (_failures(pair=5), 30),
        (_failures(pair=6), 60),
        (_failures(pair=7), 120),
        (_failures(pair=8), 240),
        (_failures(pair=9), 300),
        (_failures(pair=60), 300),
        (_failures(client=20), 30),
        (_failures(account=101), 60),
    ],
)
def test_past_a_limit_the_wait_doubles_with_each_failure_up_to_the_window(
    failures: Failures, expected: int
) -> None:
    assert wait_seconds(failures, LIMITS, NOW) == expected


def test_the_wait_counts_from_the_last_failure() -> None:
    assert wait_seconds(_failures(pair=5, ago=20), LIMITS, NOW) == 10
    assert wait_seconds(_failures(pair=5, ago=30), LIMITS, NOW) is None


@pytest.mark.parametrize(
    "password",
    [
        "12345678",
        "password1",
        "qwertyuiop",
        "iloveyou2",
        "Password123",
        "abcdefgh",
        "aaaaaaaaaaaa",
        "casetest99",
        "xCASETESTx",
        "voltpay2026",
    ],
)
def test_common_guessable_and_contextual_passwords_are_refused(password: str) -> None:
    assert passwords.refusal(password, "casetest") is not None


@pytest.mark.parametrize(
    "password", ["long enough", "correct horse", "ample-Horse-battery-9", "x7#Lq2!vR9" * 12]
)
def test_other_passwords_pass(password: str) -> None:
    assert passwords.refusal(password, "casetest") is None
