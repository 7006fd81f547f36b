"""Every API key of a tenant, for its admins: list (filtered, newest first, a page at a time) and revoke.

Scoped by the caller's tenant like the rest of the identity admin: a key of another tenant is not found.
Revoking is audited as ``api_key.revoked`` (the same as a user revoking its own key) and idempotent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from opentier.db.models.gateway import ApiKey
from opentier.errors import InvalidRequestError, NotFoundError
from opentier.gateway.identity import audit
from opentier.gateway.identity.admin import actor_of
from opentier.gateway.identity.audit import Origin
from opentier.gateway.identity.paging import Page, decode_token, encode_token
from opentier.gateway.identity.users import parse_id
from opentier.gateway.principal import Principal

MAX_PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which keys to list: of one user, and only the active ones (or only the others)."""

    user_id: str | None = None
    #: True: neither revoked nor expired; False: revoked or expired; None: all.
    active: bool | None = None


def _where_active(active: bool) -> sa.ColumnElement[bool]:
    live = sa.and_(
        ApiKey.revoked_at.is_(None), sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > sa.func.now())
    )
    return live if active else sa.not_(live)


def _after(token: str) -> tuple[datetime, uuid.UUID]:
    created, key_id = decode_token(token, 2)
    try:
        return datetime.fromisoformat(created), uuid.UUID(key_id)
    except ValueError:
        raise InvalidRequestError("page_token: not a token this server issued") from None


class TenantKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def list(
        self, principal: Principal, which: KeyFilter, page_size: int, page_token: str = ""
    ) -> Page[ApiKey]:
        """One page of the tenant's keys matching ``which``, newest first (never a secret: only the
        digest is stored)."""
        size = max(1, min(page_size, MAX_PAGE_SIZE))
        query = sa.select(ApiKey).where(ApiKey.tenant_id == uuid.UUID(principal.tenant_id))
        if which.user_id is not None:
            try:
                query = query.where(ApiKey.user_id == uuid.UUID(which.user_id))
            except ValueError:
                raise InvalidRequestError("user_id: not a user id") from None
        if which.active is not None:
            query = query.where(_where_active(which.active))
        if page_token:
            query = query.where(sa.tuple_(ApiKey.created_at, ApiKey.id) < sa.tuple_(*_after(page_token)))
        query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(size + 1)
        async with self._sessions() as session:
            rows = list(await session.scalars(query))
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            next_token = encode_token(rows[-1].created_at.isoformat(), str(rows[-1].id))
        return Page(rows, next_token)

    async def revoke(self, principal: Principal, key_id: str, origin: Origin) -> ApiKey:
        """Revoke a key of any user of the tenant, at once; revoking a revoked key changes nothing."""
        async with self._sessions() as session, session.begin():
            key = await session.scalar(
                sa.select(ApiKey)
                .where(
                    ApiKey.id == parse_id(key_id, "API key"),
                    ApiKey.tenant_id == uuid.UUID(principal.tenant_id),
                )
                .with_for_update()
            )
            if key is None:
                raise NotFoundError(f"API key {key_id} does not exist")
            if key.revoked_at is None:
                key.revoked_at = datetime.now(UTC)
                audit.record(
                    session,
                    audit.KEY_REVOKED,
                    actor=actor_of(principal),
                    origin=origin,
                    target=f"api_key:{key.id}",
                    details={"owner": str(key.user_id), "name": key.name},
                )
            return key
