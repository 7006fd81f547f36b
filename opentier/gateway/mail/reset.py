"""Password reset by mail: ask for a link (never says whether the address exists), then spend it once.

The request only checks the address's form and hands the rest to the outbox: the lookup, the token and
the mail happen in the background, so a known and an unknown address answer alike, in the same time.
Spending a token sets the new password (the identity service's rules and hashing), ends every session of
the user and every other reset link, and is audited.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import urlencode

from opentier.db.models.gateway import TenantStatus
from opentier.errors import InvalidRequestError
from opentier.gateway.identity import audit
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.service import IdentityService
from opentier.gateway.identity.tenants import find_tenant
from opentier.gateway.identity.users import find_by_email, normalize_email, revoke_sessions
from opentier.gateway.mail import tokens
from opentier.gateway.mail.outbox import Outbox

log = logging.getLogger("opentier.gateway.mail")

RESET_REQUESTED = "user.password_reset_requested"
RESET_DONE = "user.password_reset"
TEMPLATE = "password_reset"


class ResetTokenError(InvalidRequestError):
    """A password reset token that is unknown, expired or already used."""

    code = "reset_token_invalid"


class PasswordResets:
    """The password reset flow of one gateway: its identity service and its outbox."""

    def __init__(self, identity: IdentityService, outbox: Outbox, default_tenant: str) -> None:
        self._identity = identity
        self._outbox = outbox
        self._default_tenant = default_tenant

    def request(self, tenant_name: str | None, email: str, origin: Origin) -> None:
        """Mail a reset link to ``email`` if it is an enabled account of the tenant; returns at once."""
        email = normalize_email(email)
        self._outbox.spawn(self._mail_link(tenant_name or self._default_tenant, email, origin), name="reset")

    async def _mail_link(self, tenant_name: str, email: str, origin: Origin) -> None:
        mail = self._outbox.settings
        async with self._identity.transaction() as session:
            tenant = await find_tenant(session, tenant_name)
            user = None if tenant is None else await find_by_email(session, tenant.id, email)
            if tenant is None or user is None or user.disabled or tenant.status != TenantStatus.ACTIVE:
                log.info("password reset asked for an address without an enabled account; nothing sent")
                return
            if mail.reset_resend_seconds and await tokens.issued_since(
                session, user.id, tokens.PASSWORD_RESET, mail.reset_resend_seconds
            ):
                log.info("password reset asked again within %d s; nothing sent", mail.reset_resend_seconds)
                return
            token = await tokens.issue(session, user, tokens.PASSWORD_RESET, mail.reset_token_ttl_seconds)
            audit.record(
                session,
                RESET_REQUESTED,
                actor=Actor(tenant_id=tenant.id),
                origin=origin,
                target=f"user:{user.id}",
            )
            link = f"{mail.public_url.rstrip('/')}/reset?{urlencode({'token': token})}"
            values = {
                "name": user.display_name or user.email,
                "email": user.email,
                "tenant": tenant.name,
                "link": link,
                "minutes": str(max(1, mail.reset_token_ttl_seconds // 60)),
            }
            to = user.email
        self._outbox.send(to, TEMPLATE, values)

    async def confirm(self, token: str, new_password: str, origin: Origin) -> None:
        """Set ``new_password`` for the owner of ``token``, spend it, and sign the user out everywhere."""
        password_hash = await self._identity.passwords.hash(new_password)  # the policy refuses first
        now = datetime.now(UTC)
        async with self._identity.transaction() as session:
            found = await tokens.find(session, token, tokens.PASSWORD_RESET)
            if found is None:
                raise ResetTokenError("this reset link is not valid; ask for a new one")
            refusal = found.refusal(now)
            if refusal is None and (found.user.disabled or found.tenant.status != TenantStatus.ACTIVE):
                refusal = "this account cannot be reset; ask an administrator of your tenant"
            if refusal is not None:
                raise ResetTokenError(refusal)
            user = found.user
            user.password_hash = password_hash
            user.updated_at = now
            if user.email_verified_at is None:
                user.email_verified_at = now  # the link reached the address: it is the user's
            await tokens.spend_all(session, user.id, tokens.PASSWORD_RESET)
            await revoke_sessions(session, user.id, "password_reset")
            audit.record(
                session,
                RESET_DONE,
                actor=Actor(tenant_id=user.tenant_id, user_id=user.id),
                origin=origin,
                target=f"user:{user.id}",
            )
