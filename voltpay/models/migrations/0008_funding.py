"""Money in from a real payment.

* ``users.role``: customer, or operator (given on the command line only).
* ``ledger_entries.source`` and ``funding_id``: where a credit's money came
  from (sandbox, gateway, operator) and the funding it settles; unique with
  the kind, so one funding is credited (and reversed) at most once, whatever
  arrives how often.
* ``fundings``: the gateway's funding intents.
* ``operator_credits`` and ``operator_actions``: what operators credited and
  reversed, and the audit trail of who did it, when and why.
"""

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


def _time(**kwargs: object) -> fields.DatetimeField:  # type: ignore[type-arg]
    return fields.DatetimeField(auto_now=False, auto_now_add=False, **kwargs)


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0007_signing_keys")]

    initial = False

    operations = [
        ops.AddField(
            model_name="User",
            name="role",
            field=fields.CharField(max_length=16, default="customer", db_default="customer"),
        ),
        ops.AddField(
            model_name="LedgerEntry",
            name="source",
            field=fields.CharField(max_length=16, null=True),
        ),
        ops.AddField(
            model_name="LedgerEntry",
            name="funding_id",
            field=fields.UUIDField(null=True),
        ),
        ops.AddConstraint(
            model_name="LedgerEntry",
            constraint=ops.UniqueConstraint(
                fields=("funding_id", "kind"), name="uid_ledger_entries_funding_kind"
            ),
        ),
        ops.CreateModel(
            name="Funding",
            fields=[
                ("id", fields.UUIDField(primary_key=True, unique=True, db_index=True)),
                (
                    "user",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="user_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="fundings",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("wallet_id", fields.UUIDField()),
                ("reference", fields.CharField(max_length=64, unique=True)),
                ("amount_minor", fields.BigIntField()),
                ("currency", fields.CharField(max_length=3)),
                ("status", fields.CharField(max_length=16)),
                ("checkout_url", fields.CharField(max_length=1024, null=True)),
                ("access_code", fields.CharField(max_length=128, null=True)),
                ("transaction_id", fields.UUIDField(null=True)),
                ("review_reason", fields.CharField(max_length=255, null=True)),
                ("checks", fields.IntField(default=0)),
                ("next_check_at", _time()),
                ("created_at", _time()),
                ("expires_at", _time()),
                ("settled_at", _time(null=True)),
                ("updated_at", _time()),
            ],
            options={
                "table": "fundings",
                "app": "models",
                "indexes": [
                    Index(fields=["user_id", "created_at", "id"]),
                    Index(fields=["status", "next_check_at"]),
                ],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="OperatorCredit",
            fields=[
                ("id", fields.UUIDField(primary_key=True, unique=True, db_index=True)),
                ("wallet_id", fields.UUIDField()),
                ("operator_id", fields.UUIDField()),
                ("amount_minor", fields.BigIntField()),
                ("reason", fields.CharField(max_length=500)),
                ("transaction_id", fields.UUIDField()),
                ("created_at", _time()),
                ("reversed_at", _time(null=True)),
                ("reversal_transaction_id", fields.UUIDField(null=True)),
            ],
            options={"table": "operator_credits", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="OperatorAction",
            fields=[
                ("id", fields.UUIDField(primary_key=True, unique=True, db_index=True)),
                ("operator_id", fields.UUIDField()),
                ("operator_username", fields.CharField(max_length=64)),
                ("action", fields.CharField(max_length=32)),
                ("wallet_id", fields.UUIDField()),
                ("subject_id", fields.UUIDField()),
                ("amount_minor", fields.BigIntField()),
                ("reason", fields.CharField(max_length=500)),
                ("created_at", _time()),
            ],
            options={
                "table": "operator_actions",
                "app": "models",
                "indexes": [Index(fields=["created_at", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
    ]
