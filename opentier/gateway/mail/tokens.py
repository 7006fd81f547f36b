"""Single-use, short-lived tokens for mail links, stored by their SHA-256 digest (table
``gateway.mail_tokens``), one ``purpose`` per flow (``password_reset``, ``invitation``,
``email_verification``) so a reset token never passes for an invitation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import MailToken, Tenant, User
from opentier.gateway.identity.digests import digest, random_secret

PASSWORD_RESET = "password_reset"
INVITATION = "invitation"
EMAIL_VERIFICATION = "email_verification"
#: Every mail token starts so, which tells it from the other secrets of the gateway.
TOKEN_PREFIX = "otm_"


@dataclass(frozen=True, slots=True)
class FoundToken:
    """A mail token found by its digest (row locked), with its user and tenant."""

    token: MailToken
    user: User
    tenant: Tenant

    def refusal(self, now: datetime) -> str | None:
        """Why the token may not be spent now, or None."""
        if self.token.used_at is not None:
            return "this link was already used; ask for a new one"
        if self.token.expires_at <= now:
            return "this link has expired; ask for a new one"
        return None


async def issue(session: AsyncSession, user: User, purpose: str, ttl_seconds: int) -> str:
    """A new token of ``purpose`` for ``user``; only its digest is stored."""
    return await issue_until(session, user, purpose, datetime.now(UTC) + timedelta(seconds=ttl_seconds))


async def issue_until(session: AsyncSession, user: User, purpose: str, expires_at: datetime) -> str:
    """A new token of ``purpose`` for ``user`` that works until ``expires_at``; only its digest is stored."""
    token = TOKEN_PREFIX + random_secret()
    session.add(
        MailToken(
            tenant_id=user.tenant_id,
            user_id=user.id,
            purpose=purpose,
            token_hash=digest(token),
            expires_at=expires_at,
        )
    )
    await session.flush()
    return token


async def find(session: AsyncSession, token: str, purpose: str) -> FoundToken | None:
    """The token ``token`` of ``purpose`` (locked against a concurrent use), or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    found = (
        await session.execute(
            sa.select(MailToken, User, Tenant)
            .join(User, User.id == MailToken.user_id)
            .join(Tenant, Tenant.id == MailToken.tenant_id)
            .where(MailToken.token_hash == digest(token), MailToken.purpose == purpose)
            .with_for_update(of=MailToken)
        )
    ).one_or_none()
    return None if found is None else FoundToken(*found)


async def issued_since(session: AsyncSession, user_id: uuid.UUID, purpose: str, seconds: int) -> bool:
    """Whether the user got a token of ``purpose`` in the last ``seconds``."""
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    found = await session.scalar(
        sa.select(MailToken.id)
        .where(MailToken.user_id == user_id, MailToken.purpose == purpose, MailToken.created_at > since)
        .limit(1)
    )
    return found is not None


async def spend_all(session: AsyncSession, user_id: uuid.UUID, purpose: str) -> None:
    """Mark every unused token of ``purpose`` of the user used: one reset ends the other links too."""
    await session.execute(
        sa.update(MailToken)
        .where(MailToken.user_id == user_id, MailToken.purpose == purpose, MailToken.used_at.is_(None))
        .values(used_at=sa.func.now())
    )


def link(public_url: str, page: str, token: str) -> str:
    """The link of a mail: ``<public_url>/<page>?token=<token>`` (the gateway serves these pages)."""
    return f"{public_url.rstrip('/')}/{page}?{urlencode({'token': token})}"


def lifetime(seconds: int) -> str:
    """A link's lifetime in words for a mail: ``7 days``, ``48 hours``, ``30 minutes``."""
    for unit, size in (("day", 86400), ("hour", 3600)):
        if (seconds >= size * 2 and seconds % size == 0) or seconds >= size * 3:
            count = seconds // size
            return f"{count} {unit}s"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
