"""Token quotas per tenant and per user, per UTC day and per UTC calendar month.

Usage is charged from the ``usage`` events the host streams (input + output tokens of each turn) into a
ledger in the gateway's database (table ``gateway.token_usage``, one row per turn); a quota compares a
period's sum with ``limits.*_tokens_per_*`` (0: unlimited). A check reads today's rows of the tenant
(or the user) from an index that carries the token counts; the days of the month before today never
change, so their sum is read once per day and kept in memory.

Quotas are soft by design: a turn is let in while the quota has tokens left, and the chat turn stops
itself once its estimated tokens reach what was left (see :class:`opentier.gateway.chat.turn.ChatTurn`),
so concurrent turns of one caller can overrun a quota by at most their own answers.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import LimitsSettings
from opentier.db.models.gateway import TokenUsage
from opentier.errors import DatabaseError, OpenTierError, QuotaExceededError
from opentier.gateway.principal import Principal

#: Characters per token assumed while a turn streams, before the host reports the real counts.
CHARS_PER_TOKEN = 4
#: Key of the :class:`TokenQuotas` in ``gateway_state().extras``.
EXTRAS_KEY = "quotas"

Scope = Literal["tenant", "user"]
Period = Literal["day", "month"]
SCOPES: tuple[Scope, ...] = ("tenant", "user")
PERIODS: tuple[Period, ...] = ("day", "month")


def estimate_tokens(text: str) -> int:
    """A cautious estimate of the tokens of streamed ``text`` (never 0 for non-empty text)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def utc_now() -> datetime:
    return datetime.now(UTC)


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of the UTC day or calendar month holding ``now``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    month = day.replace(day=1)
    following = (
        month.replace(year=month.year + 1, month=1)
        if month.month == 12
        else month.replace(month=month.month + 1)
    )
    return month, following


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """The tightest quota of a caller: what is left of it and when its period ends."""

    scope: str  # "tenant" or "user"
    period: str  # "day" or "month"
    limit: int
    used: int
    resets_at: str  # ISO 8601, UTC

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def seconds_to_reset(self, now: datetime | None = None) -> float:
        """Seconds from ``now`` until the period ends (at least 1)."""
        ends = datetime.fromisoformat(self.resets_at)
        return max(1.0, (ends - (now or utc_now())).total_seconds())


@dataclass(frozen=True, slots=True)
class UsageCharge:
    """The tokens of one turn, as the host reported them (or as estimated when it could not)."""

    input_tokens: int
    output_tokens: int
    llm: str
    model: str
    conversation_id: str | None
    message_id: str | None
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """A caller's own tokens and turns in one period."""

    period: str
    starts_at: datetime
    resets_at: datetime
    input_tokens: int
    output_tokens: int
    turns: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """What ``GET /v1/usage`` answers: the caller's day and month, and every quota that applies."""

    day: PeriodUsage
    month: PeriodUsage
    quotas: list[QuotaWindow]


_TOKENS = TokenUsage.input_tokens + TokenUsage.output_tokens


class TokenQuotas:
    """Checks and charges token quotas; one per gateway app (``gateway_state().extras["quotas"]``).

    Built with the ``[limits]`` settings; :meth:`open` gives it the gateway's database engine when the
    app starts serving. ``clock`` (tests) says what time it is.
    """

    def __init__(
        self,
        settings: LimitsSettings,
        engine: AsyncEngine | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.limits: dict[tuple[Scope, Period], int] = {
            ("tenant", "day"): settings.tenant_tokens_per_day,
            ("tenant", "month"): settings.tenant_tokens_per_month,
            ("user", "day"): settings.user_tokens_per_day,
            ("user", "month"): settings.user_tokens_per_month,
        }
        self.engine = engine
        self.clock = clock
        # Sums of the month's days before today, per (scope, id); the days gone by never change.
        self._earlier: dict[tuple[Scope, str], int] = {}
        self._earlier_day: date | None = None

    def open(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine = None
        self._earlier.clear()

    @property
    def active(self) -> bool:
        """Whether any quota is set (without one, checks cost nothing)."""
        return any(self.limits.values())

    # --- the contract ChatTurn uses ---------------------------------------------------------------

    async def tightest(self, principal: Principal) -> QuotaWindow | None:
        """The caller's quota with the least left (None: no quota applies)."""
        windows = await self.windows(principal)
        if not windows:
            return None
        return min(windows, key=lambda w: (w.remaining, -datetime.fromisoformat(w.resets_at).timestamp()))

    async def check(self, principal: Principal) -> QuotaWindow | None:
        """:meth:`tightest`, refused with :class:`~opentier.errors.QuotaExceededError` when used up."""
        window = await self.tightest(principal)
        if window is not None and window.remaining <= 0:
            raise exceeded(window, self.clock())
        return window

    async def charge(self, principal: Principal, charge: UsageCharge) -> None:
        """Record one turn's tokens against the caller's tenant, user and API key."""
        row = {
            "created_at": self.clock(),
            "tenant_id": uuid.UUID(principal.tenant_id),
            "user_id": uuid.UUID(principal.user_id),
            "api_key_id": uuid.UUID(principal.api_key_id) if principal.api_key_id else None,
            "conversation_id": charge.conversation_id or None,
            "message_id": charge.message_id or None,
            "llm": charge.llm,
            "model": charge.model,
            "input_tokens": max(0, charge.input_tokens),
            "output_tokens": max(0, charge.output_tokens),
            "estimated": charge.estimated,
        }
        try:
            async with self._engine().begin() as conn:
                await conn.execute(sa.insert(TokenUsage).values(**row))
        except SQLAlchemyError as err:
            raise DatabaseError(
                f"the token usage of this turn could not be recorded: {err.__class__.__name__}"
            ) from err

    # --- reading the ledger -------------------------------------------------------------------------

    async def windows(self, principal: Principal) -> list[QuotaWindow]:
        """Every quota that applies to the caller, with the tokens used in its current period."""
        if not self.active:
            return []
        now = self.clock()
        day_start, day_end = period_bounds("day", now)
        month_start, month_end = period_bounds("month", now)
        tenant_today, user_today = await self._sums(principal, since=day_start, until=None)
        today = {"tenant": tenant_today, "user": user_today}
        earlier = await self._earlier_in_month(principal, month_start, day_start)
        found = []
        for (scope, period), limit in self.limits.items():
            if not limit:
                continue
            used = today[scope] + (earlier[scope] if period == "month" else 0)
            ends = day_end if period == "day" else month_end
            found.append(QuotaWindow(scope, period, limit, used, ends.isoformat()))
        return found

    async def summary(self, principal: Principal) -> UsageSummary:
        """The caller's own usage this UTC day and month, and the quotas that apply to them."""
        now = self.clock()
        day_start, day_end = period_bounds("day", now)
        month_start, month_end = period_bounds("month", now)
        today = TokenUsage.created_at >= day_start
        query = sa.select(
            sa.func.coalesce(sa.func.sum(TokenUsage.input_tokens).filter(today), 0),
            sa.func.coalesce(sa.func.sum(TokenUsage.output_tokens).filter(today), 0),
            sa.func.count().filter(today),
            sa.func.coalesce(sa.func.sum(TokenUsage.input_tokens), 0),
            sa.func.coalesce(sa.func.sum(TokenUsage.output_tokens), 0),
            sa.func.count(),
        ).where(
            TokenUsage.tenant_id == uuid.UUID(principal.tenant_id),
            TokenUsage.user_id == uuid.UUID(principal.user_id),
            TokenUsage.created_at >= month_start,
            TokenUsage.created_at < month_end,
        )
        row = await self._counts(query)
        return UsageSummary(
            day=PeriodUsage("day", day_start, day_end, *row[:3]),
            month=PeriodUsage("month", month_start, month_end, *row[3:]),
            quotas=await self.windows(principal),
        )

    async def _earlier_in_month(
        self, principal: Principal, month_start: datetime, day_start: datetime
    ) -> dict[Scope, int]:
        """Tokens of the month's days before today, per scope (cached until the day changes)."""
        wanted = [scope for scope in SCOPES if self.limits[(scope, "month")]]
        if not wanted or day_start == month_start:
            return {"tenant": 0, "user": 0}
        if self._earlier_day != day_start.date():
            self._earlier.clear()
            self._earlier_day = day_start.date()
        keys: dict[Scope, tuple[Scope, str]] = {
            "tenant": ("tenant", principal.tenant_id),
            "user": ("user", principal.user_id),
        }
        if any(keys[scope] not in self._earlier for scope in wanted):
            tenant, user = await self._sums(principal, since=month_start, until=day_start)
            self._earlier[keys["tenant"]] = tenant
            self._earlier[keys["user"]] = user
        return {scope: self._earlier.get(keys[scope], 0) for scope in SCOPES}

    async def _sums(
        self, principal: Principal, *, since: datetime, until: datetime | None
    ) -> tuple[int, int]:
        """Tokens of the caller's tenant and of the caller in [since, until); the tenant's sum only when a
        tenant quota is set (otherwise the user's index alone is read)."""
        user_id = uuid.UUID(principal.user_id)
        tenant_wide = bool(self.limits[("tenant", "day")] or self.limits[("tenant", "month")])
        conditions = [TokenUsage.tenant_id == uuid.UUID(principal.tenant_id), TokenUsage.created_at >= since]
        if until is not None:
            conditions.append(TokenUsage.created_at < until)
        if not tenant_wide:
            conditions.append(TokenUsage.user_id == user_id)
        query = sa.select(
            sa.func.coalesce(sa.func.sum(_TOKENS), 0),
            sa.func.coalesce(sa.func.sum(_TOKENS).filter(TokenUsage.user_id == user_id), 0),
        ).where(*conditions)
        tenant, user = await self._counts(query)
        return tenant, user

    async def _counts(self, query: sa.Executable) -> tuple[int, ...]:
        """The one row of an aggregate ``query``, as integers."""
        try:
            async with self._engine().connect() as conn:
                row = (await conn.execute(query)).one()
        except SQLAlchemyError as err:
            raise DatabaseError(f"the token usage ledger cannot be read: {err.__class__.__name__}") from err
        return tuple(int(value) for value in row)

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise OpenTierError("the token quotas are not open (the gateway is not serving)")
        return self.engine


def exceeded(window: QuotaWindow, now: datetime) -> QuotaExceededError:
    """The refusal for a used-up ``window``, with ``retry_after`` = seconds until its period ends."""
    whose = "your tenant's" if window.scope == "tenant" else "your"
    period = "daily" if window.period == "day" else "monthly"
    seconds = window.seconds_to_reset(now)
    return QuotaExceededError(
        f"{whose} {period} token quota ({window.limit} tokens) is used up; it resets at "
        f"{window.resets_at} (in {math.ceil(seconds)} seconds)",
        retry_after=seconds,
    )
