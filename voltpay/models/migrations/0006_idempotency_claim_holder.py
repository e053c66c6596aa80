"""An Idempotency-Key claim names the daemon run whose request holds it, so a
retry takes over the claim of a daemon that died as soon as that daemon is
known to be dead, not five minutes later."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0005_daemon_instances")]

    initial = False

    operations = [
        ops.AddField(
            model_name="IdempotencyRecord",
            name="claimed_by",
            field=fields.UUIDField(null=True),
        ),
    ]
