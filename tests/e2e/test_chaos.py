"""The chaos run's short mode passes: daemons killed and restarted under load
lose no money, debit no bill twice, leave no bill processing, answer no 5xx,
share no prepaid token, credit every funding paid on the gateway exactly once
however its webhooks arrive (duplicated, lost, at a dying daemon), and text
and audit every event exactly once.

Each run is ``python -m tests.e2e.chaos --short`` as a subprocess in a
session of its own: on a timeout it gets SIGTERM first (it then kills its
daemons, stops its SNS/SQS process and drops its database), and only then is
the whole session killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# --short keeps the run under 90 s; the rest is slack for a slow machine.
RUN_TIMEOUT_SECONDS = 180
CLEANUP_SECONDS = 30
SHOWN_LINES = 60


def run_chaos(*args: str) -> tuple[int, str]:
    """The runner's exit code and everything it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.chaos", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=CLEANUP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"the chaos run took more than {RUN_TIMEOUT_SECONDS} s\n" + _last_lines(output))
    return process.returncode, output


def _last_lines(output: str) -> str:
    return "\n".join(output.splitlines()[-SHOWN_LINES:])


def assert_passed(code: int, output: str) -> None:
    lines = output.strip().splitlines()
    last = lines[-1] if lines else ""
    assert code == 0 and last.startswith("chaos: ") and last.endswith(" PASS"), (
        f"exit {code}; the last {SHOWN_LINES} lines:\n{_last_lines(output)}"
    )


@pytest.mark.postgres
@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + CLEANUP_SECONDS + 30)
def test_three_daemons_on_postgres_survive_kills_and_a_rolling_restart() -> None:
    code, output = run_chaos("--short", "--mode", "postgres", "--daemons", "3")
    assert_passed(code, output)
    assert " mode=postgres daemons=3 " in output.splitlines()[-1]


@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + CLEANUP_SECONDS + 30)
def test_the_embedded_daemon_survives_kills_and_a_restart() -> None:
    code, output = run_chaos("--short", "--mode", "embedded")
    assert_passed(code, output)
    assert " mode=embedded daemons=1 " in output.splitlines()[-1]
