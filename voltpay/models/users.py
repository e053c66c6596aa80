"""Users, their sessions and the failed-login record that throttles guessing."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from voltpay.domain.errors import UsernameTaken
from voltpay.domain.events import Event, UserRegistered
from voltpay.domain.logins import Failures
from voltpay.models import sql
from voltpay.models.outbox import record_event
from voltpay.models.tables import LoginFailure, Session, User, Wallet

CUSTOMER = "customer"
OPERATOR = "operator"
ROLES = (CUSTOMER, OPERATOR)


async def create_user(
    *,
    username: str,
    password_hash: str,
    phone_number: str,
    currency: str,
    role: str = CUSTOMER,
) -> tuple[User, Wallet, Event]:
    """The user, their wallet at 0.00 and the user_registered event, together.
    Only the command line makes an operator."""
    now = datetime.now(UTC)
    key = fold(username)
    try:
        async with in_transaction() as conn:
            if await User.filter(username_key=key).using_db(conn).exists():
                raise UsernameTaken(username)
            user = await User.create(
                id=uuid.uuid4(),
                username=username,
                username_key=key,
                password_hash=password_hash,
                phone_number=phone_number,
                role=role,
                created_at=now,
                using_db=conn,
            )
            wallet = await Wallet.create(
                id=uuid.uuid4(),
                user=user,
                balance_minor=0,
                currency=currency,
                created_at=now,
                updated_at=now,
                using_db=conn,
            )
            registered = UserRegistered(user_id=user.id, username=username, wallet_id=wallet.id)
            event = await record_event(conn, registered, now)
    except IntegrityError:
        raise UsernameTaken(username) from None
    return user, wallet, event


def fold(username: str) -> str:
    """The username as compared: ``Ada`` and ``ada`` are one account."""
    return username.lower()


async def user_by_username(username: str) -> User | None:
    return await User.get_or_none(username_key=fold(username))


async def replace_password_hash(user_id: uuid.UUID, password_hash: str) -> None:
    await User.filter(id=user_id).update(password_hash=password_hash)


async def open_session(user_id: uuid.UUID, token_hash: str, ttl_seconds: int) -> datetime:
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=ttl_seconds)
    await Session.create(
        token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at
    )
    return expires_at


async def session_user(token_hash: str) -> User | None:
    """The user behind a live session, in one round trip."""
    found = await sql.models(
        connections.get("default"),
        User,
        "SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id "
        "WHERE sessions.token_hash = $1 AND sessions.expires_at > $2",
        token_hash,
        datetime.now(UTC),
    )
    return found[0] if found else None


async def close_session(token_hash: str) -> None:
    await Session.filter(token_hash=token_hash).delete()


async def close_sessions(user_id: uuid.UUID, *, keep: str | None = None) -> int:
    """End every session of the user but ``keep`` (a token's hash)."""
    query = Session.filter(user_id=user_id)
    if keep is not None:
        query = query.exclude(token_hash=keep)
    return await query.delete()


async def change_password(user_id: uuid.UUID, password_hash: str, *, keep: str) -> None:
    """The new hash, and every other session of the user ended, together."""
    async with in_transaction() as conn:
        await User.filter(id=user_id).using_db(conn).update(password_hash=password_hash)
        await Session.filter(user_id=user_id).exclude(token_hash=keep).using_db(conn).delete()


_FAILURES = (
    "SELECT "
    "SUM(CASE WHEN username = $1 AND client = $2 THEN 1 ELSE 0 END) AS account_and_client, "
    "SUM(CASE WHEN client = $3 THEN 1 ELSE 0 END) AS from_client, "
    "SUM(CASE WHEN username = $4 THEN 1 ELSE 0 END) AS for_account, "
    "MAX(failed_at) AS last "
    "FROM login_failures WHERE failed_at > $5 AND (username = $6 OR client = $7)"
)


async def start_login_attempt(
    username: str, client: str, window_seconds: int
) -> tuple[int, Failures]:
    """Record a login attempt as failed before its password is checked, and
    read the failures recorded before it within the window, counted for the
    account from this client, from this client, and for the account.

    Counting and recording in one transaction, one account and one client at
    a time, is what makes the limits hold when attempts come in parallel:
    counted first and recorded after the password check, a burst of a
    hundred guesses all read the same low count. The locks are PostgreSQL's
    transaction-scoped advisory locks, taken in one order (gone at COMMIT);
    SQLite runs one transaction at a time anyway."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=window_seconds)
    account = fold(username)
    async with in_transaction() as conn:
        if not sql.is_sqlite(conn):
            await conn.execute_query(
                "SELECT pg_advisory_xact_lock(hashtext($1)), pg_advisory_xact_lock(hashtext($2))",
                ["login:" + account, "client:" + client],
            )
        found = await sql.rows(
            conn, _FAILURES, account, client, client, account, since, account, client
        )
        attempt = await LoginFailure.create(
            username=account, client=client, failed_at=now, using_db=conn
        )
    row = found[0] if found else {}
    last = row.get("last")
    failures = Failures(
        account_and_client=int(row.get("account_and_client") or 0),
        client=int(row.get("from_client") or 0),
        account=int(row.get("for_account") or 0),
        last=_moment(last) if last is not None else None,
    )
    return attempt.id, failures


def _moment(value: object) -> datetime:
    """A timestamp as PostgreSQL (datetime) or SQLite (its text) returns it."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def forget_login_attempt(attempt_id: int) -> None:
    """An attempt refused before its password was checked is no failure."""
    await LoginFailure.filter(id=attempt_id).delete()


async def clear_failures(username: str, client: str) -> None:
    """A right password forgives this client's failures for the account."""
    await LoginFailure.filter(username=fold(username), client=client).delete()


async def purge_expired(now: datetime | None = None) -> None:
    """Housekeeping: sessions and failed logins nobody can use any more."""
    moment = now or datetime.now(UTC)
    await Session.filter(expires_at__lte=moment).delete()
    await LoginFailure.filter(failed_at__lte=moment - timedelta(days=1)).delete()


async def grant_role(username: str, role: str) -> bool:
    """Give the user ``role``; False when there is no such user."""
    return bool(await User.filter(username_key=fold(username)).update(role=role))


async def existing_users(user_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``user_ids`` that name a user, in one query."""
    if not user_ids:
        return set()
    found = await sql.rows(
        connections.get("default"),
        f"SELECT id FROM users WHERE id IN ({sql.placeholders(len(user_ids))})",
        *user_ids,
    )
    return {uuid.UUID(str(row["id"])) for row in found}
