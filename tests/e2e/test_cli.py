"""The command line an operator uses besides `run`."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.client import Api
from tests.e2e.conftest import Daemons, run_cli


def test_migrate_creates_the_embedded_database(tmp_path: Path) -> None:
    first = run_cli(["migrate"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "var" / "voltpay.sqlite3").exists()
    again = run_cli(["migrate"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr


async def test_user_add_creates_a_user_who_can_log_in(
    tmp_path: Path, daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    added = run_cli(
        ["user", "add", "operator_1", "--phone", "+2348011112222", "--password-stdin"],
        cwd=tmp_path,
        stdin="a long passphrase\n",
    )
    assert added.returncode == 0, added.stderr
    assert "created user operator_1" in added.stdout
    taken = run_cli(
        ["user", "add", "operator_1", "--phone", "+2348011112222", "--password-stdin"],
        cwd=tmp_path,
        stdin="a long passphrase\n",
    )
    assert taken.returncode == 2 and "taken" in taken.stderr
    weak = run_cli(
        ["user", "add", "operator_2", "--phone", "+2348011112222", "--password-stdin"],
        cwd=tmp_path,
        stdin="short\n",
    )
    assert weak.returncode == 2 and "password" in weak.stderr

    daemon = daemons.start(cwd=tmp_path)
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)
    login = await api.expect(
        200, "POST", "/api/auth/login", {"username": "operator_1", "password": "a long passphrase"}
    )
    me = await api.expect(
        200, "GET", "/api/me", headers={"Authorization": f"Bearer {login['token']}"}
    )
    assert me["username"] == "operator_1"


def test_user_add_without_a_terminal_asks_for_password_stdin(tmp_path: Path) -> None:
    done = run_cli(["user", "add", "operator_3", "--phone", "+2348011112222"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "voltpay: no terminal to ask for the password: use --password-stdin"
    ]
    assert not (tmp_path / "var").exists()  # nothing opened, nothing created


def test_aws_bootstrap_needs_an_endpoint(tmp_path: Path) -> None:
    result = run_cli(["aws", "bootstrap"], cwd=tmp_path)
    assert result.returncode == 78
    assert "VOLTPAY_AWS__ENDPOINT_URL" in result.stderr


def test_aws_bootstrap_provisions_an_endpoint(tmp_path: Path, external_aws_url: str) -> None:
    env = {
        "VOLTPAY_AWS__ENDPOINT_URL": external_aws_url,
        "VOLTPAY_AWS__TOPIC_NAME": "bootstrap-topic",
        "VOLTPAY_AWS__QUEUE_NAME": "bootstrap-queue",
        "VOLTPAY_AWS__DEAD_LETTER_QUEUE_NAME": "bootstrap-dlq",
    }
    first = run_cli(["aws", "bootstrap"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "VOLTPAY_AWS__TOPIC_ARN=arn:aws:sns:" in first.stdout
    assert "VOLTPAY_AWS__QUEUE_URL=" in first.stdout
    again = run_cli(["aws", "bootstrap"], env, cwd=tmp_path)
    assert again.stdout == first.stdout, "bootstrapping twice changes nothing"


async def test_an_operator_is_made_on_the_command_line_only(
    tmp_path: Path, daemons: Daemons, http: aiohttp.ClientSession
) -> None:
    for name in ("desk_1", "clerk_1"):
        made = run_cli(
            ["user", "add", name, "--phone", "+2348011112222", "--password-stdin"]
            + (["--role", "operator"] if name == "desk_1" else []),
            cwd=tmp_path,
            stdin="a long passphrase\n",
        )
        assert made.returncode == 0, made.stderr
    daemon = daemons.start(cwd=tmp_path)
    await daemon.wait_ready(http)
    api = Api(http, daemon.base_url)

    async def bearer(name: str) -> dict[str, str]:
        login = await api.expect(
            200, "POST", "/api/auth/login", {"username": name, "password": "a long passphrase"}
        )
        return {"Authorization": f"Bearer {login['token']}"}

    customer = await api.customer()
    credit = {"amount": "40.00", "reason": "cash at the Ikeja desk, receipt 118"}
    path = f"/api/admin/wallets/{customer.wallet_id}/credits"
    clerk = await bearer("clerk_1")
    refused = await api.call("POST", path, json=credit, headers=clerk | {"Idempotency-Key": "c1"})
    assert refused.status == 404
    operator = await bearer("desk_1")
    done = await api.expect(201, "POST", path, credit, headers=operator | {"Idempotency-Key": "k1"})
    assert (done["amount"], done["operator"]) == ("40.00", "desk_1")
    assert await api.balance(customer) == "40.00"

    granted = run_cli(["user", "grant", "clerk_1", "--role", "operator"], cwd=tmp_path)
    assert granted.returncode == 0, granted.stderr
    audit = await api.expect(200, "GET", "/api/admin/audit", headers=clerk)
    assert [(a["operator"], a["reason"]) for a in audit["items"]] == [("desk_1", credit["reason"])]
    missing = run_cli(["user", "grant", "nobody_here", "--role", "operator"], cwd=tmp_path)
    assert missing.returncode == 2
