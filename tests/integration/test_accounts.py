"""Accounts: usernames whatever their case, passwords that may not be used,
logging out everywhere, changing the password; on both databases."""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from tortoise import connections

from tests.client import Api
from tests.integration.test_api_contract import assert_problem
from voltpay.models import sql
from voltpay.models.tables import User

folding = importlib.import_module("voltpay.models.migrations.0010_logins_by_client")


PASSWORD = "ample-Horse-battery-9"


async def _register(api: Api, username: str, password: str = PASSWORD) -> int:
    body = {"username": username, "password": password, "phoneNumber": "+2348012345678"}
    return (await api.call("POST", "/api/auth/register", json=body)).status


async def test_usernames_are_one_account_whatever_their_case(api: Api) -> None:
    name = "case" + uuid.uuid4().hex[:8]
    assert await _register(api, name) == 201
    for other in (name.upper(), name.capitalize()):
        body = {
            "username": other,
            "password": "ample-Horse-battery-9",
            "phoneNumber": "+2348012345678",
        }
        assert_problem(
            await api.call("POST", "/api/auth/register", json=body), 409, "username_taken"
        )
    login = await api.call(
        "POST",
        "/api/auth/login",
        json={"username": name.upper(), "password": "ample-Horse-battery-9"},
    )
    assert login.status == 200, login.body
    assert await User.filter(username_key=name).count() == 1


@pytest.mark.parametrize("password", ["12345678", "password1", "qwertyuiop"])
async def test_a_common_password_is_refused_and_nothing_is_made(api: Api, password: str) -> None:
    name = "weak" + uuid.uuid4().hex[:8]
    body = {"username": name, "password": password, "phoneNumber": "+2348012345678"}
    assert_problem(await api.call("POST", "/api/auth/register", json=body), 422, "weak_password")
    body["password"] = name + "!x"
    assert_problem(await api.call("POST", "/api/auth/register", json=body), 422, "weak_password")
    assert not await User.filter(username_key=name).exists()


async def test_logout_all_ends_every_session(api: Api) -> None:
    who = await api.customer()
    second = await api.login(who)
    assert (await api.call("GET", "/api/me", customer=second)).status == 200
    assert (await api.call("POST", "/api/auth/logout-all", customer=who)).status == 204
    for token in (who, second):
        assert_problem(await api.call("GET", "/api/me", customer=token), 401, "unauthorized")


async def test_a_new_password_ends_every_other_session(api: Api) -> None:
    who = await api.customer()
    other = await api.login(who)
    path = "/api/auth/password"
    wrong = {"currentPassword": "not-it-at-all", "newPassword": "fresh-Kettle-orbit-4"}
    assert_problem(
        await api.call("POST", path, json=wrong, customer=who), 401, "invalid_credentials"
    )
    weak = {"currentPassword": who.password, "newPassword": "12345678"}
    assert_problem(await api.call("POST", path, json=weak, customer=who), 422, "weak_password")
    assert (await api.call("GET", "/api/me", customer=other)).status == 200, (
        "refusals change nothing"
    )
    good = {"currentPassword": who.password, "newPassword": "fresh-Kettle-orbit-4"}
    assert (await api.call("POST", path, json=good, customer=who)).status == 204
    assert (await api.call("GET", "/api/me", customer=who)).status == 200, "this session stays"
    assert_problem(await api.call("GET", "/api/me", customer=other), 401, "unauthorized")
    old = {"username": who.username, "password": who.password}
    assert_problem(await api.call("POST", "/api/auth/login", json=old), 401, "invalid_credentials")
    new = {"username": who.username, "password": "fresh-Kettle-orbit-4"}
    assert (await api.call("POST", "/api/auth/login", json=new)).status == 200


async def test_the_migration_renames_accounts_that_differ_only_in_case(database: str) -> None:
    """Accounts made before usernames were folded: the oldest keeps its name."""
    conn = connections.get("default")
    await sql.execute(conn, f'DROP INDEX IF EXISTS "{folding._INDEX}"')
    start = datetime.now(UTC) - timedelta(days=1)
    names = ["casetest", "CaseTest", "CASETEST", "other"]
    ids = []
    for offset, name in enumerate(names):
        user_id = uuid.uuid4()
        ids.append(user_id)
        await sql.execute(
            conn,
            "INSERT INTO users (id, username, username_key, password_hash, phone_number, "
            "role, created_at) VALUES ($1, $2, NULL, $3, $4, 'customer', $5)",
            user_id,
            name,
            "x",
            "+2348012345678",
            start + timedelta(minutes=offset),
        )
    await folding._fold_usernames(None, SimpleNamespace(client=conn))
    await sql.execute(
        conn, f'CREATE UNIQUE INDEX IF NOT EXISTS "{folding._INDEX}" ON "users" ("username_key")'
    )
    found = {u.id: (u.username, u.username_key) for u in await User.filter(id__in=ids)}
    assert [found[i] for i in ids] == [
        ("casetest", "casetest"),
        ("CaseTest-2", "casetest-2"),
        ("CASETEST-3", "casetest-3"),
        ("other", "other"),
    ]
