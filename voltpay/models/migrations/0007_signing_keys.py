"""``signing_keys``: the key the outbox relay signs events with, shared by
every daemon on the database and kept across restarts; the bus never sees it."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0006_idempotency_claim_holder")]

    initial = False

    operations = [
        ops.CreateModel(
            name="SigningKey",
            fields=[
                (
                    "purpose",
                    fields.CharField(max_length=32, primary_key=True, unique=True, db_index=True),
                ),
                ("secret", fields.CharField(max_length=128)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={"table": "signing_keys", "app": "models", "pk_attr": "purpose"},
            bases=["Model"],
        ),
    ]
