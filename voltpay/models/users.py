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
from voltpay.models import sql
from voltpay.models.outbox import record_event
from voltpay.models.tables import LoginFailure, Session, User, Wallet


async def create_user(
    *, username: str, password_hash: str, phone_number: str, currency: str
) -> tuple[User, Wallet, Event]:
    """The user, their wallet at 0.00 and the user_registered event, together."""
    now = datetime.now(UTC)
    try:
        async with in_transaction() as conn:
            if await User.filter(username=username).using_db(conn).exists():
                raise UsernameTaken(username)
            user = await User.create(
                id=uuid.uuid4(),
                username=username,
                password_hash=password_hash,
                phone_number=phone_number,
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


async def user_by_username(username: str) -> User | None:
    return await User.get_or_none(username=username)


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


async def start_login_attempt(username: str, window_seconds: int) -> tuple[int, list[datetime]]:
    """Record a login attempt as failed before its password is checked, and
    read the failures recorded before it within the window: the attempt's id
    and those failures' times, oldest first.

    Counting and recording in one transaction, one username at a time, is
    what makes the limit hold when attempts come in parallel: counted first
    and recorded after the password check, a burst of a hundred guesses all
    read the same low count. The lock is PostgreSQL's transaction-scoped
    advisory lock (gone at COMMIT, nothing left on the connection); SQLite
    runs one transaction at a time anyway."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=window_seconds)
    async with in_transaction() as conn:
        if not sql.is_sqlite(conn):
            await conn.execute_query("SELECT pg_advisory_xact_lock(hashtext($1))", [username])
        earlier = (
            await LoginFailure.filter(username=username, failed_at__gt=since)
            .using_db(conn)
            .order_by("failed_at")
            .values_list("failed_at", flat=True)
        )
        attempt = await LoginFailure.create(username=username, failed_at=now, using_db=conn)
    return attempt.id, list(earlier)  # type: ignore[arg-type]


async def forget_login_attempt(attempt_id: int) -> None:
    """An attempt refused before its password was checked is no failure."""
    await LoginFailure.filter(id=attempt_id).delete()


async def clear_failures(username: str) -> None:
    await LoginFailure.filter(username=username).delete()


async def purge_expired(now: datetime | None = None) -> None:
    """Housekeeping: sessions and failed logins nobody can use any more."""
    moment = now or datetime.now(UTC)
    await Session.filter(expires_at__lte=moment).delete()
    await LoginFailure.filter(failed_at__lte=moment - timedelta(days=1)).delete()


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
