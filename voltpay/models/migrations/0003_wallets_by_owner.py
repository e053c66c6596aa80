"""An index on a wallet's owner (and creation time, the primary wallet's order).

PostgreSQL does not index a foreign key's column by itself, so looking up a
user's wallets, as the first payment after a start does to find the primary
one, read the whole wallets table: a bench run's pay rounds made 2,001
sequential scans of its 2,000 rows. On PostgreSQL the index is built with a
plain CREATE INDEX, which holds writes to wallets back while it builds.
"""

from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("models", "0002_outbox_one_publish_index")]

    initial = False

    operations = [
        ops.AddIndex(
            model_name="Wallet",
            index=Index(fields=["user_id", "created_at"]),
        ),
    ]
