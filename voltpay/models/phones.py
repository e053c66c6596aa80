"""One-time codes and registrations per client: what the limits count.

Counting and recording happen in one transaction, under PostgreSQL's
transaction-scoped advisory lock (SQLite runs one transaction at a time), so
a burst of parallel requests cannot all read the same low count.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from voltpay.domain import codes
from voltpay.domain.errors import (
    CodeExpired,
    InvalidCode,
    TooManyCodes,
    TooManyGuesses,
    TooManySignups,
)
from voltpay.models import sql
from voltpay.models.tables import PhoneCode, Signup, User

SIGNUP_WINDOW = timedelta(hours=1)


async def _lock(conn: BaseDBAsyncClient, name: str) -> None:
    if not sql.is_sqlite(conn):
        await conn.execute_query("SELECT pg_advisory_xact_lock(hashtext($1))", [name])


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


async def reserve_signup(client: str, per_hour: int) -> int:
    """Count a registration from ``client``, or refuse it past the limit:
    the reservation's id, to forget it if the registration fails."""
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        await _lock(conn, "voltpay.signups:" + client)
        earlier: list[datetime] = await (  # type: ignore[assignment]
            Signup.filter(client=client, created_at__gt=now - SIGNUP_WINDOW)
            .using_db(conn)
            .order_by("created_at")
            .values_list("created_at", flat=True)
        )
        if len(earlier) >= per_hour:
            free_at = earlier[-per_hour] + SIGNUP_WINDOW
            wait = _seconds_until(free_at, now)
            raise TooManySignups(
                f"too many registrations from this address; try again in {wait} s", wait
            )
        signup = await Signup.create(client=client, created_at=now, using_db=conn)
    return int(signup.id)


async def forget_signup(signup_id: int) -> None:
    """A registration that created nothing is not counted."""
    await Signup.filter(id=signup_id).delete()


async def issue_code(
    user_id: uuid.UUID,
    phone_number: str,
    client: str,
    limits: codes.CodeLimits,
    ttl_seconds: int,
) -> str:
    """A new one-time code for the user's number, its hash stored, or
    TooManyCodes when a limit says not now. The code itself is only returned,
    to be sent once."""
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        # One lock for every code: issuing them is rare, and the limit on all
        # codes of the day needs them counted one at a time.
        await _lock(conn, "voltpay.phone_codes")
        day_ago = now - codes.DAY
        to_number = (
            await PhoneCode.filter(phone_number=phone_number, created_at__gt=day_ago)
            .using_db(conn)
            .order_by("created_at")
            .values_list("created_at", flat=True)
        )
        from_client = (
            await PhoneCode.filter(client=client, created_at__gt=now - codes.HOUR)
            .using_db(conn)
            .order_by("created_at")
            .values_list("created_at", flat=True)
        )
        today = await PhoneCode.filter(created_at__gt=day_ago).using_db(conn).count()
        oldest = (
            await PhoneCode.filter(created_at__gt=day_ago)
            .using_db(conn)
            .order_by("created_at")
            .limit(1)
            .values_list("created_at", flat=True)
        )
        retry_at = codes.next_code_at(
            now,
            limits,
            to_number=list(to_number),  # type: ignore[arg-type]
            from_client=list(from_client),  # type: ignore[arg-type]
            today=today,
            oldest_today=oldest[0] if oldest else None,  # type: ignore[arg-type]
        )
        if retry_at is not None:
            wait = _seconds_until(retry_at, now)
            raise TooManyCodes(f"no more codes for now; try again in {wait} s", wait)
        code = codes.new_code()
        salt = codes.new_salt()
        # Only the newest code counts: any earlier one is void from now.
        await (
            PhoneCode.filter(user_id=user_id, used_at=None, expires_at__gt=now)
            .using_db(conn)
            .update(expires_at=now)
        )
        await PhoneCode.create(
            id=uuid.uuid4(),
            user_id=user_id,
            phone_number=phone_number,
            client=client,
            salt=salt,
            code_hash=codes.code_hash(code, salt),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            using_db=conn,
        )
    return code


_GUESS = "UPDATE phone_codes SET guesses = guesses + 1 WHERE id = $1 AND guesses < $2"


async def verify_code(
    user_id: uuid.UUID, phone_number: str, code: str, max_guesses: int, retry_seconds: int
) -> None:
    """Mark the user's number verified if ``code`` is its newest code's;
    otherwise InvalidCode, CodeExpired or TooManyGuesses. Each guess is
    counted by a conditional update, so parallel guesses cannot pass the
    bound."""
    now = datetime.now(UTC)
    newest = (
        await PhoneCode.filter(user_id=user_id, phone_number=phone_number, used_at=None)
        .order_by("-created_at")
        .first()
    )
    if newest is None:
        raise InvalidCode("no code was sent to this number; ask for one")
    spent = TooManyGuesses("this code allows no more guesses; ask for a new one", retry_seconds)
    if newest.guesses >= max_guesses:
        raise spent
    if newest.expires_at <= now:
        raise CodeExpired("this code has expired; ask for a new one")
    counted = await sql.execute(connections.get("default"), _GUESS, newest.id, max_guesses)
    if counted != 1:
        raise spent
    if not codes.code_matches(code, newest.salt, newest.code_hash):
        raise InvalidCode("that is not the code that was sent")
    async with in_transaction() as conn:
        await PhoneCode.filter(id=newest.id).using_db(conn).update(used_at=now)
        await (
            User.filter(id=user_id, phone_number=phone_number)
            .using_db(conn)
            .update(phone_verified=True)
        )


async def purge_expired(now: datetime | None = None) -> None:
    """Housekeeping: codes and registrations no limit counts any more."""
    moment = now or datetime.now(UTC)
    await PhoneCode.filter(created_at__lte=moment - codes.DAY).delete()
    await Signup.filter(created_at__lte=moment - SIGNUP_WINDOW).delete()
