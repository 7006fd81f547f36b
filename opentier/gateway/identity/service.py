"""The identity service: sign-in, refresh, sign-out, sign-up and authenticating each request.

Every check that decides access reads the database (user enabled, tenant active, session or key live),
so logout, revocation, disabling and role changes act on the very next request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opentier.config import Settings
from opentier.db.models.gateway import AuthSession, LoginAttempt, Tenant, TenantStatus, User
from opentier.errors import AuthenticationError, PermissionDeniedError
from opentier.gateway.identity import apikeys, audit, sessions
from opentier.gateway.identity.admin import UserAdmin
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.keys import KeyAdmin
from opentier.gateway.identity.passwords import Passwords
from opentier.gateway.identity.tenants import ensure_tenant, find_tenant
from opentier.gateway.identity.throttle import LoginThrottle
from opentier.gateway.identity.tokens import AccessTokens
from opentier.gateway.identity.users import add_user, find_by_email
from opentier.gateway.principal import ROLE_SCOPES, Principal, Role

log = logging.getLogger(__name__)

WRONG_CREDENTIALS = "wrong email or password"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a sign-in or a refresh returns to the client."""

    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    user: User


class IdentityService:
    """Identity over one database engine, with the auth settings and the JWT secret of the gateway."""

    def __init__(self, settings: Settings, engine: AsyncEngine, jwt_secret: str) -> None:
        self.auth = settings.auth
        self.passwords = Passwords(self.auth)
        self.tokens = AccessTokens(self.auth, jwt_secret)
        self.throttle = LoginThrottle(self.auth)
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.users = UserAdmin(self._sessions, self.passwords)
        self.keys = KeyAdmin(self._sessions, self.auth)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed when the block ends without an error."""
        async with self._sessions() as session, session.begin():
            yield session

    # --- sign-in, refresh, sign-out ------------------------------------------------------------

    async def login(self, tenant_name: str | None, email: str, password: str, origin: Origin) -> TokenPair:
        """Tokens for a right email and password; 401 otherwise, 429 once throttled."""
        tenant_name = tenant_name or self.auth.default_tenant
        account = f"{tenant_name}\x00{email.strip().lower()}"
        await self.throttle.check(account, origin.address)
        async with self.transaction() as session:
            tenant = await find_tenant(session, tenant_name)
            user = None if tenant is None else await find_by_email(session, tenant.id, email)
            verified = await self.passwords.verify(user.password_hash if user else None, password)
            refusal = _refusal(tenant, user, verified.ok)
            if refusal is not None:
                self._record_refusal(
                    session,
                    tenant_name=tenant_name,
                    email=email,
                    tenant=tenant,
                    user=user,
                    reason=refusal,
                    origin=origin,
                )
            else:
                assert user is not None
                if verified.new_hash is not None:
                    user.password_hash = verified.new_hash
                user.last_login_at = datetime.now(UTC)
                self._attempt(session, tenant_name, email, origin, None)
                audit.record(
                    session, audit.LOGIN_SUCCEEDED, actor=_actor(user), origin=origin, target=_user(user)
                )
                pair = await self._open_session(session, user)
        if refusal is not None:
            await self.throttle.failed(account, origin.address)
            raise _login_error(refusal)
        await self.throttle.succeeded(account)
        return pair

    def _record_refusal(
        self,
        session: AsyncSession,
        *,
        tenant_name: str,
        email: str,
        tenant: Tenant | None,
        user: User | None,
        reason: str,
        origin: Origin,
    ) -> None:
        self._attempt(session, tenant_name, email, origin, reason)
        actor = Actor(tenant_id=tenant.id if tenant else None, user_id=user.id if user else None)
        audit.record(
            session,
            audit.LOGIN_FAILED,
            actor=actor,
            origin=origin,
            target=_user(user) if user else None,
            details={"reason": reason, "tenant": tenant_name[:200], "email": email.strip()[:320]},
        )

    def _attempt(
        self, session: AsyncSession, tenant_name: str, email: str, origin: Origin, reason: str | None
    ) -> None:
        session.add(
            LoginAttempt(
                tenant_name=tenant_name[:200],
                email=email.strip()[:320],
                address=origin.address,
                succeeded=reason is None,
                reason=reason,
            )
        )

    async def _open_session(self, session: AsyncSession, user: User) -> TokenPair:
        auth_session = await sessions.open_session(session, user)
        refresh = await sessions.issue_refresh(session, auth_session.id, self.auth.refresh_token_ttl_seconds)
        access = self.tokens.issue(
            user_id=str(user.id), tenant_id=str(user.tenant_id), session_id=str(auth_session.id)
        )
        return TokenPair(access.token, access.expires_at, refresh.token, refresh.expires_at, user)

    async def refresh(self, refresh_token: str, origin: Origin) -> TokenPair:
        """A new token pair for a live refresh token, which stops working; reuse ends the session."""
        reused = False
        async with self.transaction() as session:
            found = await sessions.find_refresh(session, refresh_token)
            if found is None:
                raise AuthenticationError("the refresh token is not valid")
            if found.token.revoked_at is not None:
                reused = found.session.revoked_at is None
                if reused:
                    await sessions.revoke_session(session, found.session, "refresh token reused")
                    audit.record(
                        session,
                        audit.REFRESH_REUSE_DETECTED,
                        actor=_actor(found.user),
                        origin=origin,
                        target=f"session:{found.session.id}",
                    )
            else:
                if found.token.expires_at <= datetime.now(UTC):
                    raise AuthenticationError("the refresh token has expired; sign in again")
                self._check_live(found.user, found.tenant)
                new = await sessions.issue_refresh(
                    session, found.session.id, self.auth.refresh_token_ttl_seconds
                )
                found.token.revoked_at = datetime.now(UTC)
                found.token.replaced_by = new.row.id
                access = self.tokens.issue(
                    user_id=str(found.user.id),
                    tenant_id=str(found.user.tenant_id),
                    session_id=str(found.session.id),
                )
                return TokenPair(access.token, access.expires_at, new.token, new.expires_at, found.user)
        if reused:
            log.warning("a used refresh token was presented again; its session was ended")
        raise AuthenticationError("the refresh token was already used or revoked; sign in again")

    async def logout(self, refresh_token: str, origin: Origin) -> str | None:
        """End the session of ``refresh_token``: it and every token of the session stop working. The
        session's id when this call ended it (None when it had ended already)."""
        async with self.transaction() as session:
            found = await sessions.find_refresh(session, refresh_token)
            if found is None:
                raise AuthenticationError("the refresh token is not valid")
            if found.session.revoked_at is not None:
                return None
            await sessions.revoke_session(session, found.session, "logout")
            audit.record(
                session,
                audit.LOGOUT,
                actor=_actor(found.user),
                origin=origin,
                target=f"session:{found.session.id}",
            )
            return str(found.session.id)

    async def signup(
        self, tenant_name: str | None, email: str, password: str, display_name: str, origin: Origin
    ) -> TokenPair:
        """Create a member and sign it in, when ``auth.signup`` is open for that tenant."""
        tenant_name = tenant_name or self.auth.default_tenant
        if self.auth.signup != "open" or tenant_name not in self.auth.signup_tenants:
            raise PermissionDeniedError("sign-up is closed here; ask an administrator to create your account")
        password_hash = await self.passwords.hash(password)
        async with self.transaction() as session:
            tenant = await ensure_tenant(session, tenant_name)
            if tenant.status != TenantStatus.ACTIVE:
                raise PermissionDeniedError("this tenant is suspended")
            user = await add_user(
                session,
                tenant_id=tenant.id,
                email=email,
                password_hash=password_hash,
                display_name=display_name,
                role="member",
            )
            user.last_login_at = datetime.now(UTC)
            audit.record(session, audit.SIGNED_UP, actor=_actor(user), origin=origin, target=_user(user))
            return await self._open_session(session, user)

    # --- each request --------------------------------------------------------------------------

    async def authenticate(self, credential: str) -> Principal:
        """The principal of an access token or API key; 401 (or 403 for a suspended tenant) otherwise."""
        if apikeys.looks_like_key(credential):
            return await self._authenticate_key(credential)
        claims = self.tokens.verify(credential)
        async with self.transaction() as session:
            found = (
                await session.execute(
                    sa.select(User, Tenant, AuthSession)
                    .join(Tenant, Tenant.id == User.tenant_id)
                    .join(AuthSession, AuthSession.user_id == User.id)
                    .where(
                        User.id == uuid.UUID(claims.user_id),
                        Tenant.id == uuid.UUID(claims.tenant_id),
                        AuthSession.id == uuid.UUID(claims.session_id),
                    )
                )
            ).one_or_none()
        if found is None or found[2].revoked_at is not None:
            raise AuthenticationError("the access token is no longer valid; sign in again")
        user, tenant, auth_session = found
        self._check_live(user, tenant)
        role = cast(Role, user.role)
        scopes = ROLE_SCOPES[role]
        return Principal(
            tenant_id=str(tenant.id),
            user_id=str(user.id),
            role=role,
            scopes=scopes,
            session_id=str(auth_session.id),
            operator=self._operator(tenant, scopes),
        )

    async def _authenticate_key(self, credential: str) -> Principal:
        async with self.transaction() as session:
            found = await apikeys.find_key(session, credential)
            if found is None:
                raise AuthenticationError("the API key is not valid")
            if found.key.revoked_at is not None:
                raise AuthenticationError("the API key was revoked")
            if found.key.expires_at is not None and found.key.expires_at <= datetime.now(UTC):
                raise AuthenticationError("the API key has expired")
            self._check_live(found.user, found.tenant)
            await apikeys.touch(session, found.key, self.auth.api_key_touch_seconds)
        role = cast(Role, found.user.role)
        scopes = frozenset(found.key.scopes) & ROLE_SCOPES[role]
        return Principal(
            tenant_id=str(found.tenant.id),
            user_id=str(found.user.id),
            role=role,
            scopes=scopes,
            api_key_id=str(found.key.id),
            operator=self._operator(found.tenant, scopes),
        )

    def _operator(self, tenant: Tenant, scopes: frozenset[str]) -> bool:
        return "admin" in scopes and tenant.name == self.auth.operator_tenant_name

    @staticmethod
    def _check_live(user: User, tenant: Tenant) -> None:
        if user.disabled:
            raise AuthenticationError("this account is disabled; ask an administrator of your tenant")
        if tenant.status != TenantStatus.ACTIVE:
            raise PermissionDeniedError("this tenant is suspended")


def _refusal(tenant: Tenant | None, user: User | None, password_ok: bool) -> str | None:
    """Why a sign-in is refused (for the audit log), or None when it may go ahead."""
    if tenant is None or user is None:
        return "unknown account"
    if not password_ok:
        return "wrong password"
    if user.disabled:
        return "account disabled"
    if tenant.status != TenantStatus.ACTIVE:
        return "tenant suspended"
    return None


def _login_error(reason: str) -> AuthenticationError | PermissionDeniedError:
    """What the client is told: nothing about which part was wrong, unless the password was right."""
    if reason == "account disabled":
        return AuthenticationError("this account is disabled; ask an administrator of your tenant")
    if reason == "tenant suspended":
        return PermissionDeniedError("this tenant is suspended")
    return AuthenticationError(WRONG_CREDENTIALS)


def _actor(user: User) -> Actor:
    return Actor(tenant_id=user.tenant_id, user_id=user.id)


def _user(user: User) -> str:
    return f"user:{user.id}"
