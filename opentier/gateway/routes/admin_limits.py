"""``/v1/admin/tenants/{tenant_id}/limits`` and ``/v1/admin/users/{user_id}/limits``: the rate limit and
token quotas an admin sets for a tenant or a user, on top of the ``[limits]`` defaults (scope ``admin``).

A tenant's limits are the operator's (``require_operator``): a tenant's own admins must not raise them.
A user's limits are set by the admins of the user's tenant (a user of another tenant is not found) or
by an operator. GET answers the row, the limits in effect and this period's usage; PUT replaces the row
(a null field: the default); DELETE removes it. Every change is audited and applies at once on this
gateway (within ``limits.overrides_cache_seconds`` on the others). See docs/limits.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import Tenant, User
from opentier.errors import DatabaseError, NotFoundError
from opentier.gateway.errors import documented_errors
from opentier.gateway.identity import audit
from opentier.gateway.identity.admin import actor_of
from opentier.gateway.identity.users import parse_id
from opentier.gateway.limits import overrides as rows
from opentier.gateway.limits.overrides import EXTRAS_KEY as OVERRIDES_KEY
from opentier.gateway.limits.overrides import LimitOverrides, Override
from opentier.gateway.limits.quotas import EXTRAS_KEY as QUOTAS_KEY
from opentier.gateway.limits.quotas import PERIODS, TokenQuotas, period_bounds
from opentier.gateway.origin import request_origin
from opentier.gateway.principal import Principal, current_principal, require, require_operator
from opentier.gateway.state import gateway_state

blueprint = Blueprint("admin_limits", __name__, url_prefix="/v1/admin")
TAGS = ["Admin"]
#: Largest token quota accepted (PostgreSQL bigint).
MAX_TOKENS = 2**63 - 1


def blueprints() -> list[Blueprint]:
    return [blueprint]


class LimitOverrideIn(BaseModel):
    """The limits of a tenant or user; a field left out or null keeps the `[limits]` default."""

    requests: str | None = Field(
        default=None,
        max_length=500,
        description="Requests allowed, in `limits` notation (`60 per minute; 1000 per hour`); empty: no "
        "limit. A tenant's: all its users together. A user's: replaces `per_user` and `per_api_key`.",
    )
    tokens_per_day: int | None = Field(
        default=None, ge=0, le=MAX_TOKENS, description="Tokens per UTC day; 0: unlimited."
    )
    tokens_per_month: int | None = Field(
        default=None, ge=0, le=MAX_TOKENS, description="Tokens per UTC calendar month; 0: unlimited."
    )


class LimitOverrideOut(BaseModel):
    """What an admin set (null: the default)."""

    requests: str | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    updated_at: datetime | None

    @classmethod
    def of(cls, found: Override) -> LimitOverrideOut:
        return cls(
            requests=found.requests,
            tokens_per_day=found.tokens_per_day,
            tokens_per_month=found.tokens_per_month,
            updated_at=found.updated_at,
        )


class EffectiveLimitsOut(BaseModel):
    """The limits in effect: the override's fields, else the defaults."""

    requests: str | None = Field(
        description="Requests allowed (a tenant's: all its users together); null: no such limit."
    )
    requests_per_api_key: str | None = Field(
        description="Requests allowed per API key of the user (users only; null: none, or covered by the "
        "user's own `requests`)."
    )
    tokens_per_day: int = Field(description="Tokens per UTC day; 0: unlimited.")
    tokens_per_month: int = Field(description="Tokens per UTC calendar month; 0: unlimited.")
    overridden: list[str] = Field(description="Fields that come from the override rather than `[limits]`.")


class LimitUsageWindow(BaseModel):
    """Tokens spent in the current period against the quota in effect."""

    period: str = Field(description="`day` or `month` (UTC).")
    used: int
    limit: int = Field(description="0: unlimited.")
    remaining: int | None = Field(description="Null when unlimited.")
    starts_at: datetime
    resets_at: datetime


class LimitsView(BaseModel):
    """A tenant's or a user's limits: the override, what is in effect, and this period's usage."""

    tenant_id: str
    user_id: str | None = Field(description="Null for a tenant's limits.")
    override: LimitOverrideOut | None = Field(description="Null: none set, the defaults apply.")
    effective: EffectiveLimitsOut
    usage: list[LimitUsageWindow]


# --- the routes ------------------------------------------------------------------------------------


@blueprint.get("/tenants/<tenant_id>/limits")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 404, 500)
@validate_response(LimitsView)
async def get_tenant_limits(tenant_id: str) -> LimitsView:
    """A tenant's rate limit and token quotas, with its usage this UTC day and month (operators only)."""
    tenant = await _tenant(current_principal(), tenant_id)
    async with _session() as session:
        found = await rows.get_override(session, tenant, None)
    return await _view(tenant, None, found)


@blueprint.put("/tenants/<tenant_id>/limits")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500)
@validate_request(LimitOverrideIn)
@validate_response(LimitsView)
async def put_tenant_limits(tenant_id: str, data: LimitOverrideIn) -> LimitsView:
    """Set a tenant's limits, replacing what was set (operators only; audited `limits.set`).

    `requests` limits all the tenant's requests together; the tokens replace the `tenant_tokens_*`
    defaults for it.
    """
    principal = current_principal()
    tenant = await _tenant(principal, tenant_id)
    return await _put(principal, tenant, None, data)


@blueprint.delete("/tenants/<tenant_id>/limits")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 404, 500)
@validate_response(LimitsView)
async def delete_tenant_limits(tenant_id: str) -> LimitsView:
    """Clear a tenant's limits: the defaults apply again (operators only; audited `limits.cleared`)."""
    principal = current_principal()
    tenant = await _tenant(principal, tenant_id)
    return await _clear(principal, tenant, None)


@blueprint.get("/users/<user_id>/limits")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 404, 500)
@validate_response(LimitsView)
async def get_user_limits(user_id: str) -> LimitsView:
    """A user's rate limit and token quotas, with the user's usage this UTC day and month (the admins of
    the user's tenant)."""
    tenant, user = await _user(current_principal(), user_id)
    async with _session() as session:
        found = await rows.get_override(session, tenant, user)
    return await _view(tenant, user, found)


@blueprint.put("/users/<user_id>/limits")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500)
@validate_request(LimitOverrideIn)
@validate_response(LimitsView)
async def put_user_limits(user_id: str, data: LimitOverrideIn) -> LimitsView:
    """Set a user's limits, replacing what was set (audited `limits.set`).

    `requests` replaces the `per_user` and `per_api_key` defaults for the user; the tokens replace the
    `user_tokens_*` defaults. The tenant's own limits still apply on top.
    """
    principal = current_principal()
    tenant, user = await _user(principal, user_id)
    return await _put(principal, tenant, user, data)


@blueprint.delete("/users/<user_id>/limits")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 404, 500)
@validate_response(LimitsView)
async def delete_user_limits(user_id: str) -> LimitsView:
    """Clear a user's limits: the defaults apply again (audited `limits.cleared`)."""
    principal = current_principal()
    tenant, user = await _user(principal, user_id)
    return await _clear(principal, tenant, user)


# --- helpers -----------------------------------------------------------------------------------------


def _session() -> AsyncSession:
    engine = gateway_state().engine
    if engine is None:
        raise DatabaseError("the gateway's database is not open")
    return AsyncSession(engine, expire_on_commit=False)


async def _tenant(principal: Principal, tenant_id: str) -> uuid.UUID:
    """The id of an existing tenant, for an operator; 403 for anyone else."""
    require_operator(principal)
    wanted = parse_id(tenant_id, "tenant")
    async with _session() as session:
        if await session.get(Tenant, wanted) is None:
            raise NotFoundError(f"tenant {tenant_id} does not exist")
    return wanted


async def _user(principal: Principal, user_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(tenant id, user id) of a user of the caller's tenant (any tenant's for an operator)."""
    wanted = parse_id(user_id, "user")
    async with _session() as session:
        user = await session.get(User, wanted)
    if user is None or (not principal.operator and str(user.tenant_id) != principal.tenant_id):
        raise NotFoundError(f"user {user_id} does not exist")
    return user.tenant_id, user.id


def _overrides() -> LimitOverrides:
    found = gateway_state().extras.get(OVERRIDES_KEY)
    if not isinstance(found, LimitOverrides):
        raise RuntimeError("the limit overrides are not installed on this app (opentier.gateway.routes)")
    return found


def _quotas() -> TokenQuotas:
    found = gateway_state().extras.get(QUOTAS_KEY)
    if not isinstance(found, TokenQuotas):
        raise RuntimeError("the token quotas are not installed on this app (opentier.gateway.routes)")
    return found


def _target(tenant: uuid.UUID, user: uuid.UUID | None) -> str:
    return f"tenant:{tenant}" if user is None else f"user:{user}"


async def _put(
    principal: Principal, tenant: uuid.UUID, user: uuid.UUID | None, data: LimitOverrideIn
) -> LimitsView:
    wanted = Override(
        requests=None if data.requests is None else data.requests.strip(),
        tokens_per_day=data.tokens_per_day,
        tokens_per_month=data.tokens_per_month,
    )
    async with _session() as session, session.begin():
        stored = await rows.put_override(session, tenant, user, wanted)
        audit.record(
            session,
            audit.LIMITS_SET,
            actor=actor_of(principal),
            origin=request_origin(),
            target=_target(tenant, user),
            details={
                "tenant_id": str(tenant),
                "requests": stored.requests,
                "tokens_per_day": stored.tokens_per_day,
                "tokens_per_month": stored.tokens_per_month,
            },
        )
    _overrides().invalidate(str(tenant), None if user is None else str(user))
    return await _view(tenant, user, stored)


async def _clear(principal: Principal, tenant: uuid.UUID, user: uuid.UUID | None) -> LimitsView:
    async with _session() as session, session.begin():
        removed = await rows.delete_override(session, tenant, user)
        if removed:
            audit.record(
                session,
                audit.LIMITS_CLEARED,
                actor=actor_of(principal),
                origin=request_origin(),
                target=_target(tenant, user),
                details={"tenant_id": str(tenant)},
            )
    _overrides().invalidate(str(tenant), None if user is None else str(user))
    return await _view(tenant, user, None)


async def _view(tenant: uuid.UUID, user: uuid.UUID | None, found: Override | None) -> LimitsView:
    defaults = gateway_state().settings.limits
    scope = "tenant" if user is None else "user"
    overridden: list[str] = []

    def pick(field: str, default: int) -> int:
        value = getattr(found, field, None) if found is not None else None
        if value is None:
            return default
        overridden.append(field)
        return int(value)

    requests: str | None
    per_key: str | None = None
    if found is not None and found.requests is not None:
        overridden.append("requests")
        requests = found.requests or None
    else:
        requests = None if user is None else (defaults.per_user.strip() or None)
        if user is not None:
            per_key = defaults.per_api_key.strip() or None
    effective = EffectiveLimitsOut(
        requests=requests,
        requests_per_api_key=per_key,
        tokens_per_day=pick("tokens_per_day", getattr(defaults, f"{scope}_tokens_per_day")),
        tokens_per_month=pick("tokens_per_month", getattr(defaults, f"{scope}_tokens_per_month")),
        overridden=overridden,
    )
    quotas = _quotas()
    used = await quotas.used(str(tenant), None if user is None else str(user))
    now = quotas.clock()
    usage = []
    for period in PERIODS:
        limit = effective.tokens_per_day if period == "day" else effective.tokens_per_month
        starts, ends = period_bounds(period, now)
        usage.append(
            LimitUsageWindow(
                period=period,
                used=used[period],
                limit=limit,
                remaining=max(0, limit - used[period]) if limit else None,
                starts_at=starts,
                resets_at=ends,
            )
        )
    return LimitsView(
        tenant_id=str(tenant),
        user_id=None if user is None else str(user),
        override=None if found is None else LimitOverrideOut.of(found),
        effective=effective,
        usage=usage,
    )
