"""Rate limits and token quotas per tenant and per user (``/v1/admin/tenants/{id}/limits``,
``/v1/admin/users/{id}/limits``): read, set (replacing what was set; a field left None keeps the
default) and clear. A tenant's limits need an operator's key. See docs/limits.md::

    from opentier.client.admin import limits

    client.send(limits.set_user_limits(user_id, requests="3 per minute", tokens_per_day=50_000))
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from opentier.client.calls import Call, _segment


class Override(BaseModel):
    """What an admin set (None: the default)."""

    requests: str | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    updated_at: datetime | None = None


class EffectiveLimits(BaseModel):
    """The limits in effect (``requests`` None: no such limit; tokens 0: unlimited)."""

    requests: str | None = None
    requests_per_api_key: str | None = None
    tokens_per_day: int = 0
    tokens_per_month: int = 0
    overridden: list[str] = []


class UsageWindow(BaseModel):
    """Tokens spent this UTC day or month against the quota in effect (``limit`` 0: unlimited)."""

    period: str
    used: int
    limit: int
    remaining: int | None = None
    starts_at: datetime
    resets_at: datetime


class Limits(BaseModel):
    """A tenant's (``user_id`` None) or a user's limits, with this period's usage."""

    tenant_id: str
    user_id: str | None = None
    override: Override | None = None
    effective: EffectiveLimits
    usage: list[UsageWindow]


def _path(tenant_id: str | None, user_id: str | None) -> str:
    if (tenant_id is None) == (user_id is None):
        raise ValueError("name either a tenant or a user")
    if user_id is not None:
        return f"/v1/admin/users/{_segment(user_id)}/limits"
    return f"/v1/admin/tenants/{_segment(str(tenant_id))}/limits"


def _limits(body: Any) -> Limits:
    return Limits.model_validate(body)


def get_limits(*, tenant_id: str | None = None, user_id: str | None = None) -> Call[Limits]:
    """The limits of a tenant or of a user, the ones in effect, and this period's usage."""
    return Call("GET", _path(tenant_id, user_id), _limits)


def set_limits(
    *,
    tenant_id: str | None = None,
    user_id: str | None = None,
    requests: str | None = None,
    tokens_per_day: int | None = None,
    tokens_per_month: int | None = None,
) -> Call[Limits]:
    """Replace the limits of a tenant or of a user (a field left None: the default)."""
    body = {"requests": requests, "tokens_per_day": tokens_per_day, "tokens_per_month": tokens_per_month}
    return Call("PUT", _path(tenant_id, user_id), _limits, json=body)


def clear_limits(*, tenant_id: str | None = None, user_id: str | None = None) -> Call[Limits]:
    """Remove the limits set for a tenant or a user: the defaults apply again."""
    return Call("DELETE", _path(tenant_id, user_id), _limits)
