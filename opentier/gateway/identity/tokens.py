"""Short-lived JWT access tokens (PyJWT): signed with ``gateway.jwt_secret``, fully checked on use.

Decoding names the one accepted algorithm explicitly, so ``alg=none`` and algorithm-confusion tokens are
refused; ``exp``, ``iat``, ``nbf``, ``iss``, ``aud``, ``sub``, ``tid`` and ``sid`` are all required. A
token only says who the caller claims to be: :mod:`opentier.gateway.identity.service` still checks on
each request that the user, its tenant and its session are live, so logout and disabling act at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from opentier.config import AuthSettings
from opentier.errors import AuthenticationError

REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "tid", "sid", "jti")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a valid access token says."""

    user_id: str
    tenant_id: str
    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


class AccessTokens:
    """Issues and checks access tokens with one secret and one algorithm."""

    def __init__(self, auth: AuthSettings, secret: str) -> None:
        self._secret = secret
        self._algorithm = auth.jwt_algorithm
        self._issuer = auth.issuer
        self._audience = auth.audience
        self._ttl = timedelta(seconds=auth.access_token_ttl_seconds)
        self._leeway = timedelta(seconds=auth.clock_skew_seconds)

    @property
    def ttl_seconds(self) -> int:
        return int(self._ttl.total_seconds())

    def issue(self, *, user_id: str, tenant_id: str, session_id: str) -> IssuedToken:
        now = datetime.now(UTC).replace(microsecond=0)
        expires = now + self._ttl
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "tid": tenant_id,
            "sid": session_id,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        return IssuedToken(jwt.encode(claims, self._secret, algorithm=self._algorithm), expires)

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; :class:`AuthenticationError` (without details) otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the access token has expired; refresh it or sign in again") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the access token is not valid") from None
        try:
            return AccessClaims(
                user_id=str(uuid.UUID(str(claims["sub"]))),
                tenant_id=str(uuid.UUID(str(claims["tid"]))),
                session_id=str(uuid.UUID(str(claims["sid"]))),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            )
        except (ValueError, TypeError):
            raise AuthenticationError("the access token is not valid") from None
