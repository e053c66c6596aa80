"""What an operator sees when the daemon cannot start: one line and a
non-zero exit in bounded time; and a signal during start-up is obeyed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import daemon_environment, free_port, run_cli


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A listening socket that accepts connections and never answers on them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener
    finally:
        listener.close()


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("voltpay: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("command", [["run"], ["migrate"]])
def test_a_file_that_is_not_a_database_stops_it_at_once(tmp_path: Path, command: list[str]) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("hello\n")
    env = {
        "VOLTPAY_DATABASE__URL": f"sqlite:///{not_a_database}",
        "VOLTPAY_HTTP__PORT": str(free_port()),
    }
    # It once hung here for good, deaf to SIGTERM.
    done = run_cli(command, env, cwd=tmp_path, timeout=30)
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert line.startswith(f"voltpay: cannot {command[0]}: ")
    assert "file is not a database" in line
    assert not_a_database.read_text() == "hello\n"


def test_a_refused_database_is_one_line(tmp_path: Path) -> None:
    env = {
        "VOLTPAY_DATABASE__URL": f"postgres://postgres@127.0.0.1:{free_port()}/voltpay",
        "VOLTPAY_HTTP__PORT": str(free_port()),
    }
    done = run_cli(["run"], env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "ConnectionRefusedError" in _one_line(done.stderr)


def test_sigterm_while_the_database_does_not_answer_stops_it_at_once(
    tmp_path: Path, silent_server: socket.socket
) -> None:
    port = silent_server.getsockname()[1]
    env = daemon_environment(
        {
            "VOLTPAY_DATABASE__URL": f"postgres://postgres@127.0.0.1:{port}/voltpay",
            "VOLTPAY_HTTP__PORT": str(free_port()),
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "voltpay", "run"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Imported, started, and waiting on the database: it has connected.
        silent_server.settimeout(60)
        waiting, _ = silent_server.accept()
        with waiting:  # and never answered
            assert process.poll() is None, process.communicate()
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
        # Before, it went on waiting for the database (twice 60 s), then failed.
        assert time.monotonic() - sent < 5, stderr
        assert process.returncode == 0, stderr
        assert "SIGTERM received" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_database_that_never_answers_fails_in_bounded_time(
    tmp_path: Path, silent_server: socket.socket
) -> None:
    env = {
        "VOLTPAY_DATABASE__URL": (
            f"postgres://postgres@127.0.0.1:{silent_server.getsockname()[1]}/voltpay"
        ),
        "VOLTPAY_HTTP__PORT": str(free_port()),
    }
    started = time.monotonic()
    done = run_cli(["migrate"], env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "TimeoutError" in _one_line(done.stderr)
    assert time.monotonic() - started < 30


def test_a_provider_setting_checked_at_start_is_bad_configuration(tmp_path: Path) -> None:
    env = {
        "VOLTPAY_DATABASE__URL": f"sqlite:///{tmp_path / 'v.sqlite3'}",
        "VOLTPAY_HTTP__PORT": str(free_port()),
        "VOLTPAY_PROVIDER__TARIFF_PER_KWH": "0.001",
    }
    done = run_cli(["run"], env, cwd=tmp_path, timeout=60)
    assert done.returncode == 78
    assert "VOLTPAY_PROVIDER__TARIFF_PER_KWH" in _one_line(done.stderr)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "VOLTPAY_FUNDING__GATEWAY_URL"),
        (
            {"VOLTPAY_FUNDING__GATEWAY_URL": "https://api.paystack.co"},
            "VOLTPAY_FUNDING__SECRET_KEY",
        ),
        (
            {
                "VOLTPAY_FUNDING__GATEWAY_URL": "https://api.paystack.co",
                "VOLTPAY_FUNDING__SECRET_KEY": "sk_live_x",
            },
            "VOLTPAY_FUNDING__CALLBACK_URL",
        ),
        (
            {"VOLTPAY_FUNDING__GATEWAY_URL": "http://api.paystack.co"},
            "VOLTPAY_FUNDING__GATEWAY_URL",
        ),
    ],
)
def test_gateway_mode_without_its_settings_is_bad_configuration(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    env = {
        "VOLTPAY_DATABASE__URL": f"sqlite:///{tmp_path / 'v.sqlite3'}",
        "VOLTPAY_HTTP__PORT": str(free_port()),
        "VOLTPAY_FUNDING__MODE": "gateway",
        **env,
    }
    done = run_cli(["run"], env, cwd=tmp_path, timeout=60)
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert "sk_live_x" not in done.stderr


def test_a_start_in_another_currency_than_the_wallets_hold_is_refused(tmp_path: Path) -> None:
    env = {
        "VOLTPAY_DATABASE__URL": f"sqlite:///{tmp_path / 'v.sqlite3'}",
        "VOLTPAY_HTTP__PORT": str(free_port()),
    }
    made = run_cli(
        ["user", "add", "naira_holder", "--phone", "+2348011112222", "--password-stdin"],
        env,
        cwd=tmp_path,
        stdin="a long passphrase\n",
    )
    assert made.returncode == 0, made.stderr
    done = run_cli(["run"], {**env, "VOLTPAY_LIMITS__CURRENCY": "USD"}, cwd=tmp_path, timeout=60)
    assert done.returncode == 78
    line = _one_line(done.stderr)
    assert "VOLTPAY_LIMITS__CURRENCY" in line and "NGN" in line
