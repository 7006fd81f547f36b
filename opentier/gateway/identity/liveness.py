"""Is a principal's access still there? One query, for the chat turns that re-check their caller.

A running turn was authenticated when it began; another gateway may since have suspended the tenant,
disabled the user, ended the session or revoked the key. :func:`check_live` reads all of that in one
indexed query and says which :class:`~opentier.gateway.chat.revocation.Ending` applies, if any
(docs/admin-users.md, "How open streams end").
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.db.models.gateway import ApiKey, AuthSession, Tenant, TenantStatus, User
from opentier.gateway.chat.revocation import (
    ACCOUNT_DELETED_MESSAGE,
    ACCOUNT_DISABLED,
    ACCOUNT_DISABLED_MESSAGE,
    API_KEY_EXPIRED_MESSAGE,
    API_KEY_REVOKED,
    API_KEY_REVOKED_MESSAGE,
    SESSION_ENDED,
    SESSION_ENDED_MESSAGE,
    TENANT_DELETED,
    TENANT_DELETED_MESSAGE,
    TENANT_SUSPENDED,
    TENANT_SUSPENDED_MESSAGE,
    Ending,
)
from opentier.gateway.principal import Principal

#: Tenant status, user id and disabled, session id and revoked_at, key id, revoked_at and expired.
#: (Outer joins: the ids of a missing user, session or key are NULL.)
LivenessSelect = sa.Select[str, uuid.UUID, bool, uuid.UUID, datetime | None, uuid.UUID, datetime | None, bool]


def _statement(principal: Principal) -> LivenessSelect:
    """Tenant status, user state, session and key state of ``principal``: one row, or none when the
    tenant no longer exists. The user, session and key are outer-joined: a missing one is gone."""
    user_id = uuid.UUID(principal.user_id)
    session_id = uuid.UUID(principal.session_id) if principal.session_id else None
    key_id = uuid.UUID(principal.api_key_id) if principal.api_key_id else None
    return (
        sa.select(
            Tenant.status,
            User.id,
            User.disabled,
            AuthSession.id,
            AuthSession.revoked_at,
            ApiKey.id,
            ApiKey.revoked_at,
            ApiKey.expires_at <= sa.func.now(),
        )
        .select_from(Tenant)
        .outerjoin(User, sa.and_(User.id == user_id, User.tenant_id == Tenant.id))
        .outerjoin(AuthSession, sa.and_(AuthSession.id == session_id, AuthSession.user_id == User.id))
        .outerjoin(ApiKey, sa.and_(ApiKey.id == key_id, ApiKey.user_id == User.id))
        .where(Tenant.id == uuid.UUID(principal.tenant_id))
    )


async def check_live(engine: AsyncEngine, principal: Principal) -> Ending | None:
    """Why ``principal`` may no longer stream (tenant first, then user, then key or session), or None."""
    async with engine.connect() as conn:
        row = (await conn.execute(_statement(principal))).one_or_none()
    if row is None:
        return Ending(TENANT_DELETED, TENANT_DELETED_MESSAGE)
    status, user, disabled, session, session_revoked, key, key_revoked, key_expired = row
    if status == TenantStatus.DELETING:
        return Ending(TENANT_DELETED, TENANT_DELETED_MESSAGE)
    if status != TenantStatus.ACTIVE:
        return Ending(TENANT_SUSPENDED, TENANT_SUSPENDED_MESSAGE)
    if user is None:
        return Ending(ACCOUNT_DISABLED, ACCOUNT_DELETED_MESSAGE)
    if disabled:
        return Ending(ACCOUNT_DISABLED, ACCOUNT_DISABLED_MESSAGE)
    if principal.api_key_id:
        if key is None or key_revoked is not None:
            return Ending(API_KEY_REVOKED, API_KEY_REVOKED_MESSAGE)
        if key_expired:
            return Ending(API_KEY_REVOKED, API_KEY_EXPIRED_MESSAGE)
    elif principal.session_id and (session is None or session_revoked is not None):
        return Ending(SESSION_ENDED, SESSION_ENDED_MESSAGE)
    return None
