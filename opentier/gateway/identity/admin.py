"""User administration within the caller's tenant: create, list, get, change, log out, delete — audited.

The routes check the ``admin`` scope; these methods scope every query by the caller's tenant, so a
user id of another tenant is simply not found. A tenant never loses its last active admin. What a
change ends (sign-in sessions, API keys) is returned, so that the route can end the open streams that
ran on it (:mod:`opentier.gateway.chat.revocation`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentier.db.models.gateway import ApiKey, AuthSession, RefreshToken, Tenant, User
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


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """A changed user, and the ids of the sign-in sessions the change ended (a new password)."""

    user: User
    ended_sessions: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """What a forced logout ended: the user's live sign-in sessions and, when asked, its live keys."""

    user: User
    sessions: list[str]
    api_keys: list[str]


async def end_sessions(session: AsyncSession, user_id: uuid.UUID, reason: str) -> list[str]:
    """Revoke every live sign-in of the user (:func:`revoke_sessions`) with its refresh tokens; the ids
    of the sessions it ended."""
    live = await session.scalars(
        sa.select(AuthSession.id)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .with_for_update()
    )
    ended = list(live)
    await revoke_sessions(session, user_id, reason)
    if ended:  # their refresh tokens too, so that none can be traded for new tokens
        await session.execute(
            sa.update(RefreshToken)
            .where(RefreshToken.session_id.in_(ended), RefreshToken.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )
    return [str(session_id) for session_id in ended]


async def revoke_keys(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """Revoke every key of the user that is not revoked yet; the ids of those it revoked."""
    revoked = await session.scalars(
        sa.update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=sa.func.now())
        .returning(ApiKey.id)
    )
    return [str(key_id) for key_id in revoked]


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

    async def update(
        self, principal: Principal, user_id: str, change: UserChange, origin: Origin
    ) -> UserUpdate:
        """Apply ``change``; disabling or a new password ends the user's sign-in sessions."""
        ended: list[str] = []
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
                    ended += await end_sessions(session, user.id, "user disabled")
            if change.display_name is not None:
                user.display_name = change.display_name.strip()
            if new_hash is not None:
                user.password_hash = new_hash
                ended += await end_sessions(session, user.id, "password changed")
                audit.record(session, audit.PASSWORD_CHANGED, actor=actor, origin=origin, target=target)
            await session.flush()
            await session.refresh(user)
            return UserUpdate(user, ended)

    async def logout(
        self, principal: Principal, user_id: str, *, revoke_api_keys: bool, origin: Origin
    ) -> LoggedOut:
        """Force a logout: end every sign-in session of the user (its tokens stop working at once) and,
        with ``revoke_api_keys``, revoke its keys too. Audited even when there was nothing to end."""
        async with self._sessions() as session, session.begin():
            user = await get_user(session, uuid.UUID(principal.tenant_id), parse_id(user_id, "user"))
            sessions = await end_sessions(session, user.id, "logged out by an admin")
            keys = await revoke_keys(session, user.id) if revoke_api_keys else []
            audit.record(
                session,
                audit.USER_LOGGED_OUT_BY_ADMIN,
                actor=actor_of(principal),
                origin=origin,
                target=f"user:{user.id}",
                details={
                    "sessions_ended": len(sessions),
                    "revoke_api_keys": revoke_api_keys,
                    "api_keys_revoked": keys,
                },
            )
            return LoggedOut(user, sessions, keys)

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
