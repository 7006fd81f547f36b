"""Address verification: a link mailed after an open sign-up (or asked for again by the user) proves that
the address is the user's; following it sets ``users.email_verified_at``.

The link is single-use and short-lived (``mail.verification_ttl_seconds``); a user asks for a new one at
most every ``mail.reset_resend_seconds``. See docs/email.md.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import MailToken, Tenant, TenantStatus, User
from opentier.errors import AlreadyExistsError, InvalidRequestError, RateLimitedError
from opentier.gateway.identity import audit
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.service import IdentityService
from opentier.gateway.identity.users import get_user
from opentier.gateway.mail import tokens
from opentier.gateway.mail.outbox import Outbox
from opentier.gateway.principal import Principal

log = logging.getLogger("opentier.gateway.mail")

VERIFIED = "user.email_verified"
TEMPLATE = "email_verification"
#: The page of the web front end the link opens (``<public_url>/verify-email?token=...``).
PAGE = "verify-email"


class VerificationTokenError(InvalidRequestError):
    """An address verification token that is unknown, expired or already used."""

    code = "verification_token_invalid"


class AlreadyVerifiedError(AlreadyExistsError):
    """The address was verified already: there is nothing to send."""

    code = "email_already_verified"


@dataclass(frozen=True, slots=True)
class VerificationSent:
    email: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Verified:
    email: str
    verified_at: datetime


class Verifications:
    """The address verification flow of one gateway: its identity service and its outbox."""

    def __init__(self, identity: IdentityService, outbox: Outbox) -> None:
        self._identity = identity
        self._outbox = outbox

    def after_signup(self, user_id: uuid.UUID) -> None:
        """Mail a verification link to a user who just signed up; returns at once."""
        self._outbox.spawn(self._mail_after_signup(user_id), name="verification")

    async def _mail_after_signup(self, user_id: uuid.UUID) -> None:
        async with self._identity.transaction() as session:
            user = await session.get(User, user_id)
            if user is None or user.email_verified_at is not None:
                return
            to, values = await self._issue(session, user)
        self._outbox.send(to, TEMPLATE, values)

    async def resend(self, principal: Principal) -> VerificationSent:
        """Mail the caller a new link (the older ones keep working until they expire); refused when the
        address is verified already, or when the last link is younger than ``reset_resend_seconds``."""
        mail = self._outbox.settings
        async with self._identity.transaction() as session:
            user = await get_user(session, uuid.UUID(principal.tenant_id), uuid.UUID(principal.user_id))
            if user.email_verified_at is not None:
                raise AlreadyVerifiedError(f"{user.email} is verified already")
            last = await session.scalar(
                sa.select(sa.func.max(MailToken.created_at)).where(
                    MailToken.user_id == user.id, MailToken.purpose == tokens.EMAIL_VERIFICATION
                )
            )
            if last is not None and mail.reset_resend_seconds:
                wait = (
                    last + timedelta(seconds=mail.reset_resend_seconds) - datetime.now(UTC)
                ).total_seconds()
                if wait > 0:
                    raise RateLimitedError(
                        f"a verification link was mailed less than {mail.reset_resend_seconds} seconds ago; "
                        "look for it, or ask again later",
                        retry_after=math.ceil(wait),
                    )
            to, values = await self._issue(session, user)
            sent = VerificationSent(to, datetime.now(UTC) + timedelta(seconds=mail.verification_ttl_seconds))
        self._outbox.spawn(self._mail(to, values), name="verification")
        return sent

    async def _mail(self, to: str, values: dict[str, str]) -> None:
        self._outbox.send(to, TEMPLATE, values)

    async def _issue(self, session: AsyncSession, user: User) -> tuple[str, dict[str, str]]:
        """A new token for ``user``, and the address and values of its mail."""
        mail = self._outbox.settings
        token = await tokens.issue(session, user, tokens.EMAIL_VERIFICATION, mail.verification_ttl_seconds)
        tenant = await session.get(Tenant, user.tenant_id)
        values = {
            "name": user.display_name or user.email,
            "email": user.email,
            "tenant": tenant.name if tenant is not None else "",
            "link": tokens.link(mail.public_url, PAGE, token),
            "valid_for": tokens.lifetime(mail.verification_ttl_seconds),
        }
        return user.email, values

    async def verify(self, token: str, origin: Origin) -> Verified:
        """Mark the address of ``token``'s user verified and spend every verification link of the user;
        :class:`VerificationTokenError` when the link is unknown, expired or used."""
        now = datetime.now(UTC)
        async with self._identity.transaction() as session:
            found = await tokens.find(session, token, tokens.EMAIL_VERIFICATION)
            if found is None:
                raise VerificationTokenError("this verification link is not valid; ask for a new one")
            refusal = found.refusal(now)
            if refusal is None and (found.user.disabled or found.tenant.status != TenantStatus.ACTIVE):
                refusal = "this account is disabled; ask an administrator of your tenant"
            if refusal is not None:
                raise VerificationTokenError(refusal)
            user = found.user
            user.email_verified_at = now
            user.updated_at = now
            await tokens.spend_all(session, user.id, tokens.EMAIL_VERIFICATION)
            audit.record(
                session,
                VERIFIED,
                actor=Actor(tenant_id=user.tenant_id, user_id=user.id),
                origin=origin,
                target=f"user:{user.id}",
            )
            return Verified(user.email, now)
