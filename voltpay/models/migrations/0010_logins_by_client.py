"""Usernames are unique whatever their case, and failed logins name the
client address they came from.

- ``users.username_key`` is the username case-folded, unique. Accounts made
  before, whose names differed only in case (``casetest``, ``CaseTest``),
  keep their passwords and sessions: the oldest keeps its name, each later
  one is renamed with a ``-2``, ``-3``, ... suffix (the migration logs each
  rename, by user id, for the operator to pass on).
- ``login_failures.client`` lets a wrong-password storm from one address be
  refused without locking the account's owner out from another.

The unique index is made by name with plain SQL (the same on both
databases); the field's definition in the migration state has no index, as
in 0002.
"""

from __future__ import annotations

import logging
from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

log = logging.getLogger("voltpay.migrations")

_INDEX = "uid_users_username_key"


async def _fold_usernames(apps: Any, editor: Any) -> None:
    client = editor.client
    _, rows = await client.execute_query("SELECT id, username FROM users ORDER BY created_at, id")
    taken: set[str] = set()
    for row in rows:
        user_id, username = str(row["id"]), str(row["username"])
        name, key, suffix = username, username.casefold(), 1
        while key in taken:
            suffix += 1
            tail = f"-{suffix}"
            name = username[: 64 - len(tail)] + tail
            key = name.casefold()
        taken.add(key)
        if name != username:
            log.warning("user %s: username renamed, as another differs only in case", user_id)
        await client.execute_query(
            "UPDATE users SET username = $1, username_key = $2 WHERE id = $3"
            if client.capabilities.dialect != "sqlite"
            else "UPDATE users SET username = ?, username_key = ? WHERE id = ?",
            [name, key, user_id],
        )


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0009_sms_abuse")]

    initial = False

    operations = [
        ops.AddField(
            model_name="User",
            name="username_key",
            field=fields.CharField(max_length=64, null=True),
        ),
        ops.RunPython(_fold_usernames, ops.RunPython.noop),
        ops.RunSQL(
            f'CREATE UNIQUE INDEX IF NOT EXISTS "{_INDEX}" ON "users" ("username_key")',
            reverse_sql=f'DROP INDEX IF EXISTS "{_INDEX}"',
        ),
        ops.AddField(
            model_name="LoginFailure",
            name="client",
            field=fields.CharField(max_length=64, default="", db_default=""),
        ),
        ops.RunSQL(
            'CREATE INDEX IF NOT EXISTS "idx_login_failures_client" '
            'ON "login_failures" ("client", "failed_at")',
            reverse_sql='DROP INDEX IF EXISTS "idx_login_failures_client"',
        ),
    ]
