"""SMS for the phone's owner only, and prepaid tokens in their bill only.

* ``users.phone_verified``: the number was proven by a one-time code.
* ``phone_codes``: the one-time codes' salted hashes, counted against the
  per-number, per-client and per-day limits.
* ``signups``: registrations per client address, counted against their limit.
* ``notifications.token_bill_id``: the bill whose token fills the text's
  place for it, so the token is not stored in the notification row.
"""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0008_funding")]

    initial = False

    operations = [
        ops.AddField(
            model_name="User",
            name="phone_verified",
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name="Notification",
            name="token_bill_id",
            field=fields.UUIDField(null=True),
        ),
        ops.CreateModel(
            name="PhoneCode",
            fields=[
                ("id", fields.UUIDField(primary_key=True, unique=True, db_index=True)),
                ("user_id", fields.UUIDField()),
                ("phone_number", fields.CharField(max_length=20)),
                ("client", fields.CharField(max_length=64)),
                ("salt", fields.CharField(max_length=32)),
                ("code_hash", fields.CharField(max_length=64)),
                ("guesses", fields.IntField(default=0)),
                (
                    "created_at",
                    fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False),
                ),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("used_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "phone_codes",
                "app": "models",
                "pk_attr": "id",
                "indexes": [
                    Index(fields=("user_id", "created_at")),
                    Index(fields=("phone_number", "created_at")),
                    Index(fields=("client", "created_at")),
                ],
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Signup",
            fields=[
                ("id", fields.BigIntField(primary_key=True, unique=True, db_index=True)),
                ("client", fields.CharField(max_length=64)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "signups",
                "app": "models",
                "pk_attr": "id",
                "indexes": [Index(fields=("client", "created_at"))],
            },
            bases=["Model"],
        ),
    ]
