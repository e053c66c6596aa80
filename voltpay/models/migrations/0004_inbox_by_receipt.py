"""An index on the inbox's receipt time.

Housekeeping deletes inbox rows past the retention (``outbox.retention_days``)
a chunk at a time, and the start-up republish on the embedded bus reads the
rows received since a date; without the index each of those read the whole
inbox, one row per event ever received. On PostgreSQL the index is built with
a plain CREATE INDEX, which holds inbox writes back while it builds.
"""

from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0003_wallets_by_owner")]

    initial = False

    operations = [
        ops.AddIndex(
            model_name="InboxEvent",
            index=Index(fields=["received_at"]),
        ),
    ]
