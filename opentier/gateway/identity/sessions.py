"""Sign-in sessions and their rotating refresh tokens.

A session is one sign-in; its refresh tokens form a family. Each refresh replaces the token with a new
one and marks the old one used; presenting a used token again means it was copied, so the whole family
(and every access token of the session) is revoked at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import AuthSession, RefreshToken, Tenant, User
from opentier.gateway.identity.digests import digest, random_secret

REFRESH_PREFIX = "otr_"


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    token: str
    expires_at: datetime
    row: RefreshToken


@dataclass(frozen=True, slots=True)
class RefreshLookup:
    """A refresh token found by its digest, locked, with its session, user and tenant."""

    token: RefreshToken
    session: AuthSession
    user: User
    tenant: Tenant


async def open_session(session: AsyncSession, user: User) -> AuthSession:
    auth_session = AuthSession(tenant_id=user.tenant_id, user_id=user.id)
    session.add(auth_session)
    await session.flush()
    return auth_session


async def issue_refresh(session: AsyncSession, auth_session_id: uuid.UUID, ttl_seconds: int) -> IssuedRefresh:
    """A new refresh token of the family ``auth_session_id``; only its digest is stored."""
    token = REFRESH_PREFIX + random_secret()
    expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    row = RefreshToken(session_id=auth_session_id, token_hash=digest(token), expires_at=expires)
    session.add(row)
    await session.flush()
    return IssuedRefresh(token, expires, row)


async def find_refresh(session: AsyncSession, token: str) -> RefreshLookup | None:
    """The refresh token ``token`` (row locked against a concurrent rotation), or None."""
    if not token.startswith(REFRESH_PREFIX):
        return None
    found = (
        await session.execute(
            sa.select(RefreshToken, AuthSession, User, Tenant)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .join(User, User.id == AuthSession.user_id)
            .join(Tenant, Tenant.id == User.tenant_id)
            .where(RefreshToken.token_hash == digest(token))
            .with_for_update(of=RefreshToken)
        )
    ).one_or_none()
    return None if found is None else RefreshLookup(*found)


async def revoke_session(session: AsyncSession, auth_session: AuthSession, reason: str) -> None:
    """End ``auth_session``: every refresh token of its family and every access token it issued."""
    await session.execute(
        sa.update(AuthSession)
        .where(AuthSession.id == auth_session.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=sa.func.now(), revoked_reason=reason)
    )
    await session.execute(
        sa.update(RefreshToken)
        .where(RefreshToken.session_id == auth_session.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=sa.func.now())
    )
