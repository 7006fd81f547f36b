"""The audit log: one row per security-relevant event, written in the caller's transaction.

An event that must survive a refusal (a failed login, a detected token reuse) is written in its own
committed transaction before the error is raised. Details never hold a secret.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import AuditEvent

LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"
LOGOUT = "logout"
REFRESH_REUSE_DETECTED = "token.refresh_reuse_detected"
SIGNED_UP = "user.signed_up"
USER_CREATED = "user.created"
USER_ROLE_CHANGED = "user.role_changed"
USER_DISABLED = "user.disabled"
USER_ENABLED = "user.enabled"
USER_DELETED = "user.deleted"
USER_LOGGED_OUT_BY_ADMIN = "user.logged_out_by_admin"
PASSWORD_CHANGED = "user.password_changed"
KEY_CREATED = "api_key.created"
KEY_REVOKED = "api_key.revoked"
#: A tenant's or user's rate limit and token quotas set or cleared by an admin (docs/limits.md).
LIMITS_SET = "limits.set"
LIMITS_CLEARED = "limits.cleared"
#: Tenant operations of the platform operator (docs/admin.md), recorded under the operator's tenant.
TENANT_CREATED = "tenant.created"
TENANT_SUSPENDED = "tenant.suspended"
TENANT_RESUMED = "tenant.resumed"
TENANT_DELETED = "tenant.deleted"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from: the client address and the request id, for the audit log."""

    address: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a user, possibly through one of its API keys; nobody for anonymous events."""

    tenant_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


def record(
    session: AsyncSession,
    action: str,
    *,
    actor: Actor,
    origin: Origin,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to ``session`` (committed with the change it describes)."""
    session.add(
        AuditEvent(
            tenant_id=actor.tenant_id,
            actor_user_id=actor.user_id,
            actor_api_key_id=actor.api_key_id,
            action=action,
            target=target,
            address=origin.address,
            request_id=origin.request_id,
            details=details or {},
        )
    )
