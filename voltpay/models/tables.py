"""The tables. Money columns hold integer minor units; nothing here is a float."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class User(Model):
    id = fields.UUIDField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    # The username case-folded: unique (an index of migration 0010), so that
    # no two accounts differ only in case.
    username_key = fields.CharField(max_length=64, null=True)
    password_hash = fields.CharField(max_length=255)
    phone_number = fields.CharField(max_length=20)
    # customer, or operator (given on the command line only, never by the API).
    role = fields.CharField(max_length=16, default="customer", db_default="customer")
    # Proven by a one-time code sent to the number.
    phone_verified = fields.BooleanField(default=False, db_default=False)
    created_at = fields.DatetimeField()

    class Meta:
        table = "users"


class PhoneCode(Model):
    """One one-time code sent to a user's number: only its salted hash is
    kept. Kept a day after it was made, so the codes of a number, a client
    and the whole service can be counted against their limits."""

    id = fields.UUIDField(primary_key=True)
    user_id = fields.UUIDField()
    phone_number = fields.CharField(max_length=20)
    client = fields.CharField(max_length=64)
    salt = fields.CharField(max_length=32)
    code_hash = fields.CharField(max_length=64)
    guesses = fields.IntField(default=0)
    created_at = fields.DatetimeField(db_index=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "phone_codes"
        indexes = (
            ("user_id", "created_at"),
            ("phone_number", "created_at"),
            ("client", "created_at"),
        )


class Signup(Model):
    """A registration from one client address, kept an hour to count them."""

    id = fields.BigIntField(primary_key=True)
    client = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()

    class Meta:
        table = "signups"
        indexes = (("client", "created_at"),)


class Session(Model):
    token_hash = fields.CharField(max_length=64, primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="sessions", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "sessions"


class LoginFailure(Model):
    id = fields.BigIntField(primary_key=True)
    username = fields.CharField(max_length=64)
    failed_at = fields.DatetimeField()
    # The client address the attempt came from.
    client = fields.CharField(max_length=64, default="", db_default="")

    class Meta:
        table = "login_failures"
        indexes = (("username", "failed_at"),)


class Wallet(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="wallets", on_delete=fields.CASCADE
    )
    balance_minor = fields.BigIntField(default=0)
    currency = fields.CharField(max_length=3)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "wallets"
        # A user's wallets, oldest first (the primary one is the first). The
        # foreign key alone gets no index on PostgreSQL: without this, each
        # look-up by owner read every wallet.
        indexes = (("user_id", "created_at"),)


class LedgerEntry(Model):
    id = fields.UUIDField(primary_key=True)
    wallet: fields.ForeignKeyRelation[Wallet] = fields.ForeignKeyField(
        "models.Wallet", related_name="entries", on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=16)
    # Signed: credits and refunds positive, debits negative, so SUM() is the balance.
    amount_minor = fields.BigIntField()
    balance_after_minor = fields.BigIntField()
    bill_id = fields.UUIDField(null=True)
    # Where a credit's money came from: sandbox (nothing paid), gateway (a
    # verified payment) or operator (cash or a transfer an operator answers
    # for); None for a bill's debit and refund.
    source = fields.CharField(max_length=16, null=True)
    # The funding intent or operator credit the entry settles. Unique with
    # the kind: one credit (and one reversal) per funding, whatever retries.
    funding_id = fields.UUIDField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "ledger_entries"
        indexes = (("wallet_id", "created_at", "id"),)
        unique_together = (("funding_id", "kind"),)


class Bill(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="bills", on_delete=fields.CASCADE
    )
    wallet_id = fields.UUIDField(null=True)
    meter_number = fields.CharField(max_length=32)
    meter_type = fields.CharField(max_length=16)
    customer_name = fields.CharField(max_length=128)
    address = fields.CharField(max_length=255)
    amount_minor = fields.BigIntField()
    status = fields.CharField(max_length=16, db_index=True)
    tariff_minor_per_kwh = fields.BigIntField()
    token = fields.CharField(max_length=20, null=True)
    units = fields.CharField(max_length=32, null=True)
    receipt_number = fields.CharField(max_length=64, null=True)
    vend_request_id = fields.CharField(max_length=64, null=True, unique=True)
    failure_reason = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    processing_since = fields.DatetimeField(null=True)
    paid_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "bills"
        indexes = (("user_id", "created_at", "id"),)


class Funding(Model):
    """A funding intent: a payment the customer makes on the gateway's page,
    credited once the gateway's verify call confirms it."""

    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="fundings", on_delete=fields.CASCADE
    )
    wallet_id = fields.UUIDField()
    # Ours, sent to the gateway, unique: the key every webhook and verify names.
    reference = fields.CharField(max_length=64, unique=True)
    amount_minor = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    status = fields.CharField(max_length=16)
    checkout_url = fields.CharField(max_length=1024, null=True)
    access_code = fields.CharField(max_length=128, null=True)
    transaction_id = fields.UUIDField(null=True)
    review_reason = fields.CharField(max_length=255, null=True)
    checks = fields.IntField(default=0)
    next_check_at = fields.DatetimeField()
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    settled_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "fundings"
        indexes = (("user_id", "created_at", "id"), ("status", "next_check_at"))


class OperatorCredit(Model):
    """Money an operator put into a wallet, and its reversal if any."""

    id = fields.UUIDField(primary_key=True)
    wallet_id = fields.UUIDField()
    operator_id = fields.UUIDField()
    amount_minor = fields.BigIntField()
    reason = fields.CharField(max_length=500)
    transaction_id = fields.UUIDField()
    created_at = fields.DatetimeField()
    reversed_at = fields.DatetimeField(null=True)
    reversal_transaction_id = fields.UUIDField(null=True)

    class Meta:
        table = "operator_credits"


class OperatorAction(Model):
    """The audit trail of operators: who did what, when and why. Rows are
    only ever inserted, in the transaction of the action they record."""

    id = fields.UUIDField(primary_key=True)
    operator_id = fields.UUIDField()
    operator_username = fields.CharField(max_length=64)
    action = fields.CharField(max_length=32)
    wallet_id = fields.UUIDField()
    subject_id = fields.UUIDField()
    amount_minor = fields.BigIntField()
    reason = fields.CharField(max_length=500)
    created_at = fields.DatetimeField()

    class Meta:
        table = "operator_actions"
        indexes = (("created_at", "id"),)


class OutboxEvent(Model):
    id = fields.BigIntField(primary_key=True)
    event_id = fields.UUIDField(unique=True)
    event_type = fields.CharField(max_length=32)
    body = fields.TextField()
    created_at = fields.DatetimeField()
    published_at = fields.DatetimeField(null=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    # A relay's lease on the row while it publishes it; other relays skip it.
    claimed_until = fields.DatetimeField(null=True)
    claimed_by = fields.UUIDField(null=True)
    last_error = fields.CharField(max_length=255, null=True)

    class Meta:
        table = "outbox"
        indexes = (("published_at", "next_attempt_at"),)


class IdempotencyRecord(Model):
    id = fields.BigIntField(primary_key=True)
    scope = fields.CharField(max_length=64)
    key = fields.CharField(max_length=255)
    request_hash = fields.CharField(max_length=64)
    state = fields.CharField(max_length=16)
    response_status = fields.IntField(null=True)
    response_content_type = fields.CharField(max_length=64, null=True)
    response_body = fields.TextField(null=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    # The daemon run whose request holds the claim while it is in progress.
    claimed_by = fields.UUIDField(null=True)

    class Meta:
        table = "idempotency_keys"
        unique_together = (("scope", "key"),)


class InboxEvent(Model):
    event_id = fields.UUIDField(primary_key=True)
    event_type = fields.CharField(max_length=32)
    received_at = fields.DatetimeField()

    class Meta:
        table = "inbox"
        indexes = (("received_at",),)


class Notification(Model):
    id = fields.UUIDField(primary_key=True)
    event_id = fields.UUIDField(unique=True)
    event_type = fields.CharField(max_length=32)
    user_id = fields.UUIDField(null=True)
    to = fields.CharField(max_length=20)
    # The text as sent, except a prepaid token, which stays in its bill only:
    # TOKEN_MARK stands in its place, filled from the bill named here.
    body = fields.TextField()
    token_bill_id = fields.UUIDField(null=True)
    status = fields.CharField(max_length=16)
    sender = fields.CharField(max_length=16, null=True)
    provider_message_id = fields.CharField(max_length=64, null=True)
    error = fields.CharField(max_length=255, null=True)
    attempts = fields.IntField(default=0)
    # A lease: whoever holds it is sending right now; others must not.
    claimed_until = fields.DatetimeField(null=True)
    claimed_by = fields.UUIDField(null=True)
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "notifications"
        indexes = (("user_id", "created_at", "id"),)


class AuditRecord(Model):
    id = fields.BigIntField(primary_key=True)
    event_id = fields.UUIDField(unique=True)
    event_type = fields.CharField(max_length=32)
    occurred_at = fields.DatetimeField()
    recorded_at = fields.DatetimeField()
    body = fields.TextField()

    class Meta:
        table = "audit_log"


class DaemonInstance(Model):
    """One run of a daemon: every lease names the instance that holds it.

    A lease whose holder has stopped, or whose heartbeat is older than the
    liveness window, is void, so another daemon (or this one's successor)
    takes the work over without waiting out the lease.
    """

    id = fields.UUIDField(primary_key=True)
    host = fields.CharField(max_length=255)
    pid = fields.IntField()
    started_at = fields.DatetimeField()
    heartbeat_at = fields.DatetimeField()
    stopped_at = fields.DatetimeField(null=True)

    class Meta:
        table = "daemon_instances"


class NamedLease(Model):
    """A lease on one piece of shared work (housekeeping, reconciling a bill)."""

    name = fields.CharField(max_length=128, primary_key=True)
    holder = fields.UUIDField()
    claimed_until = fields.DatetimeField()

    class Meta:
        table = "leases"


class SimulatedVend(Model):
    """The simulated electricity provider's record of one vend request.

    The provider stands for a service outside the daemons: its state lives
    here so that every daemon on one database sees the same vends.
    """

    request_id = fields.CharField(max_length=64, primary_key=True)
    meter_number = fields.CharField(max_length=32)
    amount_minor = fields.BigIntField()
    status = fields.CharField(max_length=16)
    token = fields.CharField(max_length=20, null=True)
    units = fields.CharField(max_length=32, null=True)
    tariff_minor_per_kwh = fields.BigIntField(null=True)
    receipt_number = fields.CharField(max_length=64, null=True)
    reason = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "simulated_vends"


class SimulatedMeter(Model):
    """The last token identifier (minutes since the STS base date) the
    simulated provider issued for a meter: they only ever rise."""

    meter_number = fields.CharField(max_length=32, primary_key=True)
    last_token_minute = fields.BigIntField()

    class Meta:
        table = "simulated_meters"


class SigningKey(Model):
    """A secret every daemon on this database shares, by what it is for
    (``events``: the signature on each event the outbox relay publishes).

    Created by the first daemon that needs it and never changed, so every
    daemon verifies every other's events, and events published again after
    a restart still verify.
    """

    purpose = fields.CharField(max_length=32, primary_key=True)
    secret = fields.CharField(max_length=128)
    created_at = fields.DatetimeField()

    class Meta:
        table = "signing_keys"
