"""Notices by mail (``mail.notices``): a new API key to its owner, a used-up token quota to the user (user
quota) or to the tenant's admins (tenant quota).

A quota notice goes out once per subject and period, whichever gateway sees the quota used up first: the
row ``(kind, subject, period)`` of ``gateway.notices_sent`` is inserted first (``ON CONFLICT DO NOTHING``)
and the mail is sent only when the insert took. See docs/email.md.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from opentier.db.models.gateway import ApiKey, NoticeSent, Tenant, User
from opentier.gateway.identity.audit import Origin
from opentier.gateway.identity.service import IdentityService
from opentier.gateway.limits.quotas import EXTRAS_KEY as QUOTAS_KEY
from opentier.gateway.limits.quotas import QuotaWindow, TokenQuotas
from opentier.gateway.mail.outbox import Outbox
from opentier.gateway.principal import Principal
from opentier.gateway.state import GatewayState, gateway_state

log = logging.getLogger("opentier.gateway.mail")

KEY_TEMPLATE = "api_key_created"
USER_QUOTA_TEMPLATE = "quota_exhausted_user"
TENANT_QUOTA_TEMPLATE = "quota_exhausted_tenant"
#: ``notices_sent.kind`` of a quota notice.
QUOTA_EXHAUSTED = "quota_exhausted"
#: Key of the app's :class:`Notices` in ``gateway_state().extras`` while it serves.
EXTRAS_KEY = "mail_notices"


def shown_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class Notices:
    """The notices of one gateway; each does its work (lookups, mail) in the outbox, never in a request."""

    def __init__(self, identity: IdentityService, outbox: Outbox) -> None:
        self._identity = identity
        self._outbox = outbox

    @property
    def enabled(self) -> bool:
        return self._outbox.settings.notices

    def key_created(self, principal: Principal, key: ApiKey, origin: Origin) -> None:
        """Mail the owner of ``key``, just created by ``principal``, about it; returns at once."""
        if self.enabled:
            self._outbox.spawn(self._key_mail(principal, key, origin), name="api key notice")

    async def _key_mail(self, principal: Principal, key: ApiKey, origin: Origin) -> None:
        async with self._identity.transaction() as session:
            owner = await session.get(User, key.user_id)
            tenant = await session.get(Tenant, key.tenant_id)
            creator = await session.get(User, uuid.UUID(principal.user_id))
            if owner is None or tenant is None:
                return  # deleted meanwhile
        by = (
            "you" if creator is None or creator.id == owner.id else f"{creator.display_name or creator.email}"
        )
        values = {
            "name": owner.display_name or owner.email,
            "email": owner.email,
            "tenant": tenant.name,
            "key_name": key.name,
            "key_id": str(key.id),
            "prefix": f"otk_{key.prefix}_",
            "scopes": ", ".join(key.scopes),
            "created_at": shown_time(key.created_at),
            "expires": shown_time(key.expires_at) if key.expires_at is not None else "never",
            "address": origin.address or "an unknown address",
            "by": by,
        }
        self._outbox.send(owner.email, KEY_TEMPLATE, values)

    async def quota_exhausted(self, principal: Principal, window: QuotaWindow) -> None:
        """A quota of ``principal`` was used up: mail its user or its tenant's admins, once per period.

        The listener of :class:`opentier.gateway.limits.quotas.TokenQuotas` (``exhausted_listeners``)."""
        if not self.enabled:
            return
        ends = datetime.fromisoformat(window.resets_at)
        starts = (ends - timedelta(seconds=1)).date()
        period = starts.isoformat() if window.period == "day" else starts.strftime("%Y-%m")
        owner = principal.user_id if window.scope == "user" else principal.tenant_id
        subject = f"{window.scope}:{owner}:{window.period}"
        tenant_id = uuid.UUID(principal.tenant_id)
        async with self._identity.transaction() as session:
            inserted = await session.scalar(
                insert(NoticeSent)
                .values(kind=QUOTA_EXHAUSTED, subject=subject, period=period, tenant_id=tenant_id)
                .on_conflict_do_nothing()
                .returning(NoticeSent.kind)
            )
            if inserted is None:
                return  # sent already for this period, by this gateway or another
            tenant = await session.get(Tenant, tenant_id)
            if window.scope == "user":
                found = await session.get(User, uuid.UUID(principal.user_id))
                recipients = [] if found is None or found.disabled else [found]
            else:
                recipients = list(
                    await session.scalars(
                        sa.select(User)
                        .where(
                            User.tenant_id == tenant_id,
                            User.role == "admin",
                            User.disabled.is_(False),
                            User.password_hash.is_not(None),
                        )
                        .order_by(User.created_at)
                    )
                )
        template = USER_QUOTA_TEMPLATE if window.scope == "user" else TENANT_QUOTA_TEMPLATE
        common = {
            "tenant": tenant.name if tenant is not None else "",
            "period": "daily" if window.period == "day" else "monthly",
            "limit": str(window.limit),
            "used": str(window.used),
            "resets_at": shown_time(ends),
        }
        log.info(
            "%s %s quota of %s used up: noticing %d people",
            window.scope,
            window.period,
            owner,
            len(recipients),
        )
        for user in recipients:
            self._outbox.send(
                user.email, template, common | {"name": user.display_name or user.email, "email": user.email}
            )


#: Where :func:`install` keeps the quotas it listens to, so :func:`uninstall` leaves those very ones
#: (the app's quotas may have been replaced meanwhile, e.g. by a test).
_LISTENED_KEY = "mail_notices_listened_quotas"


def install(state: GatewayState, notices: Notices) -> None:
    """Hang ``notices`` on the serving app and listen to its token quotas being used up."""
    state.extras[EXTRAS_KEY] = notices
    quotas = state.extras.get(QUOTAS_KEY)
    if isinstance(quotas, TokenQuotas):
        quotas.exhausted_listeners.append(notices.quota_exhausted)
        state.extras[_LISTENED_KEY] = quotas


def uninstall(state: GatewayState) -> None:
    notices = state.extras.pop(EXTRAS_KEY, None)
    quotas = state.extras.pop(_LISTENED_KEY, None)
    if isinstance(notices, Notices) and isinstance(quotas, TokenQuotas):
        with contextlib.suppress(ValueError):
            quotas.exhausted_listeners.remove(notices.quota_exhausted)


def notify_key_created(principal: Principal, key: ApiKey, origin: Origin) -> None:
    """Mail the owner of the new ``key`` (when the serving app has notices installed)."""
    notices = gateway_state().extras.get(EXTRAS_KEY)
    if isinstance(notices, Notices):
        notices.key_created(principal, key, origin)
