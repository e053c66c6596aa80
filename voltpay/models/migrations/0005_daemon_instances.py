"""Several daemons on one database.

* ``daemon_instances``: one row per daemon run, with its heartbeat. Every
  lease (an outbox row being published, a notification being sent, a named
  piece of shared work) names its holder, so a lease held by a daemon that
  died is void at once, not when it runs out.
* ``leases``: named leases for work one daemon at a time should do
  (housekeeping, reconciling one bill).
* ``simulated_vends`` and ``simulated_meters``: the simulated electricity
  provider's state, shared by every daemon as a real provider's would be.
"""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0004_inbox_by_receipt")]

    initial = False

    operations = [
        ops.CreateModel(
            name="DaemonInstance",
            fields=[
                ("id", fields.UUIDField(primary_key=True, unique=True, db_index=True)),
                ("host", fields.CharField(max_length=255)),
                ("pid", fields.IntField()),
                ("started_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("heartbeat_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                (
                    "stopped_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
            ],
            options={"table": "daemon_instances", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="NamedLease",
            fields=[
                (
                    "name",
                    fields.CharField(max_length=128, primary_key=True, unique=True, db_index=True),
                ),
                ("holder", fields.UUIDField()),
                ("claimed_until", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={"table": "leases", "app": "models", "pk_attr": "name"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SimulatedVend",
            fields=[
                (
                    "request_id",
                    fields.CharField(max_length=64, primary_key=True, unique=True, db_index=True),
                ),
                ("meter_number", fields.CharField(max_length=32)),
                ("amount_minor", fields.BigIntField()),
                ("status", fields.CharField(max_length=16)),
                ("token", fields.CharField(max_length=20, null=True)),
                ("units", fields.CharField(max_length=32, null=True)),
                ("tariff_minor_per_kwh", fields.BigIntField(null=True)),
                ("receipt_number", fields.CharField(max_length=64, null=True)),
                ("reason", fields.CharField(max_length=255, null=True)),
                (
                    "created_at",
                    fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False),
                ),
            ],
            options={"table": "simulated_vends", "app": "models", "pk_attr": "request_id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SimulatedMeter",
            fields=[
                (
                    "meter_number",
                    fields.CharField(max_length=32, primary_key=True, unique=True, db_index=True),
                ),
                ("last_token_minute", fields.BigIntField()),
            ],
            options={"table": "simulated_meters", "app": "models", "pk_attr": "meter_number"},
            bases=["Model"],
        ),
        ops.AddField(
            model_name="OutboxEvent",
            name="claimed_by",
            field=fields.UUIDField(null=True),
        ),
        ops.AddField(
            model_name="Notification",
            name="claimed_by",
            field=fields.UUIDField(null=True),
        ),
    ]
