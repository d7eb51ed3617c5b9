"""Argon2id password hashing (pwdlib), run off the event loop."""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from server.config import Settings


class Passwords:
    def __init__(self, settings: Settings) -> None:
        hasher = Argon2Hasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
        )
        self._hash = PasswordHash((hasher,))
        # Verifying against this keeps unknown-email logins as slow as wrong passwords.
        self._dummy = self._hash.hash("kuda-timing-equaliser")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        target = hashed or self._dummy
        try:
            ok = await asyncio.to_thread(self._hash.verify, password, target)
        except UnknownHashError:  # an unusable hash (a deleted account) matches nothing
            return False
        return ok and hashed is not None
