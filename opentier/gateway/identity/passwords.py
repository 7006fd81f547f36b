"""Password hashing with argon2id (argon2-cffi), off the event loop, with rehash on new parameters.

Hashing is deliberately slow (tens of milliseconds and tens of MiB), so it runs in a worker thread; a
login for an unknown account still spends the same work on a dummy hash, so response times do not tell
which emails exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from opentier.config import AuthSettings
from opentier.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Verified:
    """The outcome of a check: whether the password matched, and a new hash when it is due."""

    ok: bool
    new_hash: str | None = None


class Passwords:
    """Hashes and checks passwords with the argon2id parameters of ``auth``."""

    def __init__(self, auth: AuthSettings) -> None:
        self._min = auth.password_min_length
        self._max = auth.password_max_length
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_kib,
            parallelism=auth.argon2_parallelism,
        )
        self._dummy: str | None = None

    def check_policy(self, password: str) -> None:
        """Refuse a password the policy does not accept (the message never repeats the password)."""
        if len(password) < self._min:
            raise InvalidRequestError(f"password: at least {self._min} characters are required")
        if len(password) > self._max:
            raise InvalidRequestError(f"password: at most {self._max} characters are accepted")
        if not password.strip():
            raise InvalidRequestError("password: must not be blank")

    async def hash(self, password: str) -> str:
        """An argon2id hash of ``password`` after checking the policy."""
        self.check_policy(password)
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> Verified:
        """Whether ``password`` matches ``stored``; with no stored hash, spend the same work and fail."""
        if len(password) > self._max:
            return Verified(ok=False)
        return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> Verified:
        if stored is None:
            if self._dummy is None:
                self._dummy = self._hasher.hash("opentier-dummy-password")
            self._matches(self._dummy, password)
            return Verified(ok=False)
        if not self._matches(stored, password):
            return Verified(ok=False)
        if self._hasher.check_needs_rehash(stored):
            return Verified(ok=True, new_hash=self._hasher.hash(password))
        return Verified(ok=True)

    def _matches(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
