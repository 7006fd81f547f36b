"""Random secrets and their digests: what refresh tokens and API keys are made of.

Both are 32 random bytes, so a plain SHA-256 digest is enough to store them (nothing to brute-force, no
need for a slow hash); comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 32


def random_secret() -> str:
    """32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def digest(value: str) -> str:
    """The SHA-256 hex digest stored in place of a secret."""
    return hashlib.sha256(value.encode()).hexdigest()


def same_digest(value: str, stored: str) -> bool:
    """Whether ``value`` hashes to ``stored``, compared in constant time."""
    return hmac.compare_digest(digest(value), stored)
