"""``GET /v1/usage``: the caller's own token usage this UTC day and month, and the quotas over it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_response

from opentier.gateway.errors import documented_errors
from opentier.gateway.limits.quotas import EXTRAS_KEY, PeriodUsage, QuotaWindow, TokenQuotas
from opentier.gateway.principal import current_principal, require
from opentier.gateway.state import gateway_state

blueprint = Blueprint("usage", __name__, url_prefix="/v1")


def blueprints() -> list[Blueprint]:
    return [blueprint]


class UsagePeriod(BaseModel):
    """The caller's tokens and chat turns in one period."""

    starts_at: datetime = Field(description="Start of the period (UTC).")
    resets_at: datetime = Field(description="End of the period, when its quotas start again (UTC).")
    input_tokens: int = Field(description="Prompt tokens of the caller's turns.")
    output_tokens: int = Field(description="Answer tokens of the caller's turns.")
    total_tokens: int = Field(description="Input + output tokens: what quotas count.")
    turns: int = Field(description="Chat turns charged.")

    @classmethod
    def of(cls, usage: PeriodUsage) -> UsagePeriod:
        return cls(
            starts_at=usage.starts_at,
            resets_at=usage.resets_at,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            turns=usage.turns,
        )


class Quota(BaseModel):
    """One token quota that applies to the caller, and how much of it is used."""

    scope: Literal["tenant", "user"] = Field(description="Counted over the whole tenant, or the caller.")
    period: Literal["day", "month"] = Field(description="UTC day or UTC calendar month.")
    limit: int = Field(description="Tokens allowed in the period.")
    used: int = Field(description="Tokens used in the current period.")
    remaining: int = Field(description="Tokens left; at 0 chat turns are refused (429 `quota_exceeded`).")
    resets_at: datetime = Field(description="When the period ends (UTC).")

    @classmethod
    def of(cls, window: QuotaWindow) -> Quota:
        return cls.model_validate(
            {
                "scope": window.scope,
                "period": window.period,
                "limit": window.limit,
                "used": window.used,
                "remaining": window.remaining,
                "resets_at": window.resets_at,
            }
        )


class UsageReport(BaseModel):
    """The caller's usage and quotas."""

    day: UsagePeriod
    month: UsagePeriod
    quotas: list[Quota] = Field(description="The quotas that apply (none: unlimited).")


@blueprint.get("/usage")
@require("read")
@tag(["Usage"])
@documented_errors(401, 403, 500, 503)
@validate_response(UsageReport)
async def usage() -> UsageReport:
    """Your own token usage this UTC day and month, and your quotas (scope `read`).

    Tokens are counted per chat turn (input + output) as the LLM reported them. A quota of the tenant
    counts every user of the tenant; `used` is then the tenant's total.
    """
    quotas = gateway_state().extras.get(EXTRAS_KEY)
    if not isinstance(quotas, TokenQuotas):
        raise RuntimeError("the token quotas are not installed on this app (opentier.gateway.routes)")
    summary = await quotas.summary(current_principal())
    return UsageReport(
        day=UsagePeriod.of(summary.day),
        month=UsagePeriod.of(summary.month),
        quotas=[Quota.of(window) for window in summary.quotas],
    )
