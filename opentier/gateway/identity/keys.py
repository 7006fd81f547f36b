"""API key administration: a user's own keys, or (for admins) the keys of any user of the tenant.

A key never holds more than its owner's role allows, nor more than the caller itself holds (a key
with `read` cannot mint a key with `ingest`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentier.config import AuthSettings
from opentier.db.models.gateway import ApiKey
from opentier.errors import InvalidRequestError, PermissionDeniedError
from opentier.gateway.identity import apikeys, audit
from opentier.gateway.identity.admin import actor_of
from opentier.gateway.identity.apikeys import NewKey
from opentier.gateway.identity.audit import Origin
from opentier.gateway.identity.users import get_user, parse_id
from opentier.gateway.principal import ROLE_SCOPES, SCOPES, Principal


class KeyAdmin:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], auth: AuthSettings) -> None:
        self._sessions = sessions
        self._auth = auth

    async def create(
        self,
        principal: Principal,
        owner_id: str,
        *,
        name: str,
        scopes: list[str],
        expires_in_days: int | None,
        origin: Origin,
    ) -> NewKey:
        """A new key of ``owner_id``; the returned secret is the only time the key is seen."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise InvalidRequestError(f"scopes: unknown {', '.join(unknown)}; known: {', '.join(SCOPES)}")
        if not scopes:
            raise InvalidRequestError("scopes: name at least one of " + ", ".join(SCOPES))
        if not name.strip():
            raise InvalidRequestError("name: must not be blank")
        beyond_caller = sorted(set(scopes) - principal.scopes)
        if beyond_caller:
            raise PermissionDeniedError(
                f"you cannot grant scope(s) you do not hold: {', '.join(beyond_caller)}"
            )
        async with self._sessions() as session, session.begin():
            owner = await get_user(session, uuid.UUID(principal.tenant_id), parse_id(owner_id, "user"))
            beyond_owner = sorted(set(scopes) - ROLE_SCOPES[owner.role])
            if beyond_owner:
                raise PermissionDeniedError(
                    f"a {owner.role}'s key cannot hold the scope(s) {', '.join(beyond_owner)}"
                )
            new = await apikeys.create_key(
                session, owner=owner, name=name, scopes=scopes, ttl=self._ttl(expires_in_days)
            )
            audit.record(
                session,
                audit.KEY_CREATED,
                actor=actor_of(principal),
                origin=origin,
                target=f"api_key:{new.row.id}",
                details={"owner": str(owner.id), "name": new.row.name, "scopes": new.row.scopes},
            )
            return new

    async def list(self, principal: Principal, owner_id: str) -> list[ApiKey]:
        async with self._sessions() as session:
            owner = await get_user(session, uuid.UUID(principal.tenant_id), parse_id(owner_id, "user"))
            return await apikeys.user_keys(session, owner)

    async def revoke(self, principal: Principal, owner_id: str, key_id: str, origin: Origin) -> ApiKey:
        """Revoke at once (idempotent: revoking a revoked key changes nothing)."""
        async with self._sessions() as session, session.begin():
            owner = await get_user(session, uuid.UUID(principal.tenant_id), parse_id(owner_id, "user"))
            key = await apikeys.owned_key(session, owner, parse_id(key_id, "API key"))
            if key.revoked_at is None:
                key.revoked_at = datetime.now(UTC)
                audit.record(
                    session,
                    audit.KEY_REVOKED,
                    actor=actor_of(principal),
                    origin=origin,
                    target=f"api_key:{key.id}",
                    details={"owner": str(owner.id), "name": key.name},
                )
            return key

    def _ttl(self, days: int | None) -> timedelta | None:
        if days is None:
            days = self._auth.api_key_default_ttl_days
        if days is None:
            return None
        if days < 1:
            raise InvalidRequestError("expires_in_days: must be 1 or more")
        limit = self._auth.api_key_max_ttl_days
        if limit is not None and days > limit:
            raise InvalidRequestError(f"expires_in_days: at most {limit} days are allowed here")
        return timedelta(days=days)
