"""The outbox keeps one index for publishing: (published_at, next_attempt_at).

The single-column index on published_at duplicated its leading column. With
statistics taken while nothing waited (autovacuum's analyze lags a backlog
that builds in minutes, during an SNS outage say), PostgreSQL chose it for the
relay's claim, then fetched and sorted every waiting row to take one batch:
about 300 ms a claim at 87,000 waiting events, where the composite index
hands the rows over already in order. Every outbox write also kept it up.

Tortoise's AlterField rebuilds the table on SQLite and the rebuilt table
lacks the composite index, so the index is dropped by name (the same on both
databases) and the field's new definition goes into the migration state only.
"""

from typing import Any

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

_INDEX = "idx_outbox_publish_810a07"


class _FieldStateOnly(ops.AlterField):  # type: ignore[misc]
    """AlterField for the migration state only; RunSQL changes the schema."""

    async def database_forward(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def database_backward(self, *args: Any, **kwargs: Any) -> None:
        return None


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        ops.RunSQL(
            f'DROP INDEX IF EXISTS "{_INDEX}"',
            reverse_sql=f'CREATE INDEX IF NOT EXISTS "{_INDEX}" ON "outbox" ("published_at")',
        ),
        _FieldStateOnly(
            model_name="OutboxEvent",
            name="published_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
