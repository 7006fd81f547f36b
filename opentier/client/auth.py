"""The credential a client sends: an API key, or the access and refresh tokens of a sign-in.

An API key (``otk_...``) is sent as it is. Tokens come from :meth:`AsyncClient.login`; the access token
lives minutes, so when the gateway answers 401 (or the token is about to expire) the client trades the
refresh token for a new pair, once, and tries the request again. Refresh tokens rotate: the new pair
replaces the old one, and ``on_tokens`` lets you store it (a refresh token used twice ends the session).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Refresh this long before the access token expires, rather than send one the gateway will refuse.
EXPIRY_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class Tokens:
    """A token pair; ``expires_at`` is the access token's expiry (``time.time()`` seconds)."""

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None

    @classmethod
    def from_response(cls, body: dict[str, Any], *, now: float | None = None) -> Tokens:
        """The pair of a ``/v1/auth/login`` or ``/v1/auth/refresh`` answer."""
        now = time.time() if now is None else now
        expires_in = body.get("expires_in")
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=body.get("refresh_token"),
            expires_at=now + float(expires_in) if isinstance(expires_in, int | float) else None,
        )

    def expiring(self, *, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) >= self.expires_at - EXPIRY_MARGIN_SECONDS

    def __repr__(self) -> str:  # never print a secret
        return f"Tokens(access_token='…', refresh_token={'…' if self.refresh_token else None})"


TokensCallback = Callable[[Tokens], None]


@dataclass
class Credentials:
    """What the client authenticates with; changed by login, refresh and logout."""

    api_key: str | None = None
    tokens: Tokens | None = None
    on_tokens: TokensCallback | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.api_key is not None and self.tokens is not None:
            raise ValueError("give an API key or tokens, not both")

    @property
    def bearer(self) -> str | None:
        """What goes after ``Authorization: Bearer``, or ``None`` when there is no credential."""
        if self.tokens is not None:
            return self.tokens.access_token
        return self.api_key

    def headers(self) -> dict[str, str]:
        bearer = self.bearer
        return {"Authorization": f"Bearer {bearer}"} if bearer else {}

    @property
    def refreshable(self) -> bool:
        return self.tokens is not None and bool(self.tokens.refresh_token)

    def needs_refresh(self) -> bool:
        """The access token is about to expire and can be renewed."""
        return self.refreshable and self.tokens is not None and self.tokens.expiring()

    def set_tokens(self, tokens: Tokens | None) -> None:
        self.api_key = None
        self.tokens = tokens
        if tokens is not None and self.on_tokens is not None:
            self.on_tokens(tokens)

    def __repr__(self) -> str:
        kind = "tokens" if self.tokens else "api key" if self.api_key else "none"
        return f"Credentials({kind})"
