"""User administration within the caller's tenant: create, list, get, change, delete — audited.

The routes check the ``admin`` scope; these methods scope every query by the caller's tenant, so a
user id of another tenant is simply not found. A tenant never loses its last active admin.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentier.db.models.gateway import Tenant, User
from opentier.errors import InvalidRequestError, NotFoundError
from opentier.gateway.identity import audit
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.paging import Page
from opentier.gateway.identity.passwords import Passwords
from opentier.gateway.identity.users import (
    add_user,
    count_active_admins,
    get_user,
    list_users,
    parse_id,
    revoke_sessions,
)
from opentier.gateway.principal import Principal


@dataclass(frozen=True, slots=True)
class UserChange:
    """Fields an admin may change; None leaves a field as it is."""

    role: str | None = None
    disabled: bool | None = None
    display_name: str | None = None
    password: str | None = None


def actor_of(principal: Principal) -> Actor:
    return Actor(
        tenant_id=uuid.UUID(principal.tenant_id),
        user_id=uuid.UUID(principal.user_id),
        api_key_id=uuid.UUID(principal.api_key_id) if principal.api_key_id else None,
    )


class UserAdmin:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], passwords: Passwords) -> None:
        self._sessions = sessions
        self._passwords = passwords

    async def create(
        self,
        principal: Principal,
        *,
        email: str,
        password: str,
        display_name: str,
        role: str,
        origin: Origin,
    ) -> User:
        password_hash = await self._passwords.hash(password)
        async with self._sessions() as session, session.begin():
            user = await add_user(
                session,
                tenant_id=uuid.UUID(principal.tenant_id),
                email=email,
                password_hash=password_hash,
                display_name=display_name,
                role=role,
            )
            audit.record(
                session,
                audit.USER_CREATED,
                actor=actor_of(principal),
                origin=origin,
                target=f"user:{user.id}",
                details={"role": role},
            )
            return user

    async def list(self, principal: Principal, page_size: int, page_token: str) -> Page[User]:
        async with self._sessions() as session:
            return await list_users(session, uuid.UUID(principal.tenant_id), page_size, page_token)

    async def get(self, principal: Principal, user_id: str) -> User:
        async with self._sessions() as session:
            return await get_user(session, uuid.UUID(principal.tenant_id), parse_id(user_id, "user"))

    async def me(self, principal: Principal) -> tuple[User, Tenant]:
        async with self._sessions() as session:
            user = await get_user(session, uuid.UUID(principal.tenant_id), uuid.UUID(principal.user_id))
            tenant = await session.get(Tenant, user.tenant_id)
            if tenant is None:
                raise NotFoundError("your tenant no longer exists")
            return user, tenant

    async def update(self, principal: Principal, user_id: str, change: UserChange, origin: Origin) -> User:
        new_hash = None if change.password is None else await self._passwords.hash(change.password)
        async with self._sessions() as session, session.begin():
            tenant_id = uuid.UUID(principal.tenant_id)
            user = await get_user(session, tenant_id, parse_id(user_id, "user"))
            actor = actor_of(principal)
            target = f"user:{user.id}"
            loses_admin = (
                user.role == "admin"
                and not user.disabled
                and ((change.role is not None and change.role != "admin") or change.disabled is True)
            )
            if loses_admin and await count_active_admins(session, tenant_id) <= 1:
                raise InvalidRequestError("this is the tenant's last active admin; make another admin first")
            if change.role is not None and change.role != user.role:
                details = {"from": user.role, "to": change.role}
                user.role = change.role
                audit.record(
                    session,
                    audit.USER_ROLE_CHANGED,
                    actor=actor,
                    origin=origin,
                    target=target,
                    details=details,
                )
            if change.disabled is not None and change.disabled != user.disabled:
                user.disabled = change.disabled
                action = audit.USER_DISABLED if change.disabled else audit.USER_ENABLED
                audit.record(session, action, actor=actor, origin=origin, target=target)
                if change.disabled:
                    await revoke_sessions(session, user.id, "user disabled")
            if change.display_name is not None:
                user.display_name = change.display_name.strip()
            if new_hash is not None:
                user.password_hash = new_hash
                await revoke_sessions(session, user.id, "password changed")
                audit.record(session, audit.PASSWORD_CHANGED, actor=actor, origin=origin, target=target)
            await session.flush()
            await session.refresh(user)
            return user

    async def delete(self, principal: Principal, user_id: str, origin: Origin) -> None:
        async with self._sessions() as session, session.begin():
            tenant_id = uuid.UUID(principal.tenant_id)
            user = await get_user(session, tenant_id, parse_id(user_id, "user"))
            if (
                user.role == "admin"
                and not user.disabled
                and await count_active_admins(session, tenant_id) <= 1
            ):
                raise InvalidRequestError("this is the tenant's last active admin; make another admin first")
            await session.delete(user)
            audit.record(
                session,
                audit.USER_DELETED,
                actor=actor_of(principal),
                origin=origin,
                target=f"user:{user.id}",
                details={"email": user.email},
            )
