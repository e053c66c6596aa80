"""Passwords (argon2id) and bearer tokens (256-bit, stored only as SHA-256).

Hashing runs on threads of its own, never the loop's default executor that
the database and AWS clients share, and takes no more work than it can start
soon: past its threads and a short queue, and past a client's half of them,
a request is refused at once (HashingBusy: 503 with Retry-After) instead of
waiting seconds behind a flood of logins.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from voltpay.domain.errors import HashingBusy

T = TypeVar("T")
# OWASP's argon2id floor: 19 MiB of memory, 2 iterations, 1 lane.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when a username is unknown, so the answer takes as long either way.
_DUMMY_HASH = _HASHER.hash("voltpay-timing-equaliser")


class Hashing:
    """Password hashing's own threads, and its admission."""

    def __init__(self, *, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="password-hashing")
        self._room = threads + queue
        self._per_client = max(1, self._room // 2)
        self._busy = 0
        self._by_client: Counter[str] = Counter()

    async def _run(self, client: str, work: Callable[[], T]) -> T:
        if self._busy >= self._room or self._by_client[client] >= self._per_client:
            raise HashingBusy("too many logins at once; try again in a second")
        self._busy += 1
        self._by_client[client] += 1
        try:
            # argon2 releases the GIL; the loop goes on meanwhile.
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self._busy -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]

    async def hash(self, password: str, client: str = "") -> str:
        return await self._run(client, lambda: _HASHER.hash(password))

    async def verify(self, password_hash: str | None, password: str, client: str = "") -> bool:
        def check() -> bool:
            try:
                return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(
                    password_hash
                )
            except (VerificationError, InvalidHashError):
                return False

        return await self._run(client, check)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def hash_password(password: str) -> str:
    """A hash outside any request (the command line)."""
    return await asyncio.to_thread(_HASHER.hash, password)


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
