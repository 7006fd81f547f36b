"""Invitations: an admin invites an address into a tenant; the invitee sets a password through the mailed
link and is signed in.

The invited user exists from the start, without a password, so nobody can sign in as it until the
invitation is accepted. Inviting again an address that has not accepted yet mails a fresh link and spends
the older ones; an address that already has an account is refused (409). Only an operator
(``Principal.operator``) invites into another tenant than its own. Accepting sets the password (the
usual policy), marks the address verified (the link proves it), spends the link and opens a session, as a
sign-in does. See docs/email.md.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import Tenant, TenantStatus, User
from opentier.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, PermissionDeniedError
from opentier.gateway.identity import audit, sessions
from opentier.gateway.identity.admin import actor_of
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.service import IdentityService, TokenPair
from opentier.gateway.identity.users import add_user, find_by_email, normalize_email
from opentier.gateway.mail import tokens
from opentier.gateway.mail.outbox import Outbox
from opentier.gateway.principal import Principal

log = logging.getLogger("opentier.gateway.mail")

INVITED = "user.invited"
ACCEPTED = "user.invitation_accepted"
TEMPLATE = "invitation"
#: The page of the web front end the link opens (``<public_url>/invitation?token=...``).
PAGE = "invitation"


class InvitationTokenError(InvalidRequestError):
    """An invitation token that is unknown, expired or already used."""

    code = "invitation_token_invalid"


@dataclass(frozen=True, slots=True)
class InvitationSent:
    """An invitation just mailed (or about to be): whom, into which tenant, until when."""

    user_id: uuid.UUID
    email: str
    tenant_id: uuid.UUID
    expires_at: datetime
    resent: bool


class Invitations:
    """The invitation flow of one gateway: its identity service and its outbox."""

    def __init__(self, identity: IdentityService, outbox: Outbox) -> None:
        self._identity = identity
        self._outbox = outbox

    async def invite(
        self,
        principal: Principal,
        *,
        email: str,
        role: str,
        display_name: str | None,
        tenant_id: str | None,
        origin: Origin,
    ) -> InvitationSent:
        """Create (or keep) the invited user without a password and mail it a fresh link; returns once
        the user and the link are stored, the mail going out in the background."""
        target = _target_tenant(principal, tenant_id)
        email = normalize_email(email)
        mail = self._outbox.settings
        expires_at = datetime.now(UTC) + timedelta(seconds=mail.invitation_ttl_seconds)
        async with self._identity.transaction() as session:
            tenant = await session.get(Tenant, target)
            if tenant is None:
                raise NotFoundError(f"tenant {target} does not exist")
            if tenant.status != TenantStatus.ACTIVE:
                raise InvalidRequestError(
                    f"tenant {tenant.name!r} is {tenant.status}; nobody can join it now"
                )
            user = await find_by_email(session, tenant.id, email)
            resent = user is not None
            if user is None:
                user = await add_user(
                    session,
                    tenant_id=tenant.id,
                    email=email,
                    password_hash=None,
                    display_name=display_name or "",
                    role=role,
                )
            else:
                _check_pending(user)
                user.role = role
                if display_name is not None:
                    user.display_name = display_name.strip()
                user.updated_at = datetime.now(UTC)
                await tokens.spend_all(session, user.id, tokens.INVITATION)
            token = await tokens.issue_until(session, user, tokens.INVITATION, expires_at)
            actor = actor_of(principal)
            details: dict[str, str | bool] = {"role": role, "resent": resent}
            if tenant.id != actor.tenant_id:
                details["by_tenant"] = principal.tenant_id
            audit.record(
                session,
                INVITED,
                actor=Actor(tenant_id=tenant.id, user_id=actor.user_id, api_key_id=actor.api_key_id),
                origin=origin,
                target=f"user:{user.id}",
                details=details,
            )
            values = {
                "name": user.display_name or user.email,
                "email": user.email,
                "tenant": tenant.name,
                "inviter": await _inviter(session, principal),
                "role": role,
                "link": tokens.link(mail.public_url, PAGE, token),
                "valid_for": tokens.lifetime(mail.invitation_ttl_seconds),
            }
            sent = InvitationSent(user.id, user.email, tenant.id, expires_at, resent)
        self._outbox.spawn(self._mail(sent.email, values), name="invitation")
        return sent

    async def _mail(self, to: str, values: dict[str, str]) -> None:
        self._outbox.send(to, TEMPLATE, values)

    async def accept(self, token: str, password: str, display_name: str | None, origin: Origin) -> TokenPair:
        """Set the invited user's password with ``token`` (once), mark its address verified and sign it
        in; :class:`InvitationTokenError` when the link is unknown, expired or used."""
        password_hash = await self._identity.passwords.hash(password)  # the policy refuses first
        now = datetime.now(UTC)
        async with self._identity.transaction() as session:
            found = await tokens.find(session, token, tokens.INVITATION)
            if found is None:
                raise InvitationTokenError(
                    "this invitation link is not valid; ask an administrator for a new one"
                )
            if found.token.used_at is not None or found.user.password_hash is not None:
                raise InvitationTokenError("this invitation was already accepted; sign in with your password")
            if found.token.expires_at <= now:
                raise InvitationTokenError(
                    "this invitation has expired; ask an administrator of your tenant to invite you again"
                )
            if found.user.disabled or found.tenant.status != TenantStatus.ACTIVE:
                raise InvitationTokenError(
                    "this account cannot be activated; ask an administrator of your tenant"
                )
            user = found.user
            user.password_hash = password_hash
            user.email_verified_at = now
            user.updated_at = now
            user.last_login_at = now
            if display_name is not None and display_name.strip():
                user.display_name = display_name.strip()
            await tokens.spend_all(session, user.id, tokens.INVITATION)
            actor = Actor(tenant_id=user.tenant_id, user_id=user.id)
            target = f"user:{user.id}"
            audit.record(session, ACCEPTED, actor=actor, origin=origin, target=target)
            audit.record(session, audit.LOGIN_SUCCEEDED, actor=actor, origin=origin, target=target)
            return await self._sign_in(session, user)

    async def _sign_in(self, session: AsyncSession, user: User) -> TokenPair:
        """A new session of ``user``, as a sign-in opens one."""
        identity = self._identity
        opened = await sessions.open_session(session, user)
        refresh = await sessions.issue_refresh(session, opened.id, identity.auth.refresh_token_ttl_seconds)
        access = identity.tokens.issue(
            user_id=str(user.id), tenant_id=str(user.tenant_id), session_id=str(opened.id)
        )
        return TokenPair(access.token, access.expires_at, refresh.token, refresh.expires_at, user)


def _target_tenant(principal: Principal, tenant_id: str | None) -> uuid.UUID:
    """The tenant to invite into: the caller's own, or (operators only) the one named."""
    own = uuid.UUID(principal.tenant_id)
    if tenant_id is None:
        return own
    try:
        wanted = uuid.UUID(tenant_id)
    except ValueError:
        raise InvalidRequestError("tenant_id: not a tenant id") from None
    if wanted != own and not principal.operator:
        raise PermissionDeniedError(
            "only administrators of the operator tenant may invite into another tenant (auth.operator_tenant)"
        )
    return wanted


def _check_pending(user: User) -> None:
    """Refuse to invite an address that already has an account (or a disabled one)."""
    if user.password_hash is not None:
        raise AlreadyExistsError(f"{user.email} already has an account in this tenant")
    if user.disabled:
        raise AlreadyExistsError(f"{user.email} was invited and then disabled; enable the user first")


async def _inviter(session: AsyncSession, principal: Principal) -> str:
    """Who invites, as the mail names them."""
    found = await session.get(User, uuid.UUID(principal.user_id))
    if found is None:
        return "an administrator"
    return found.display_name or found.email
