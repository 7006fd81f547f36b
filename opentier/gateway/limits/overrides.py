"""Rate limits and token quotas set by admins per tenant and per user (``gateway.limit_overrides``), on
top of the ``[limits]`` defaults.

A tenant's row (``user_id`` NULL) holds a rate limit on all the tenant's requests together and the
tenant's token quotas; a user's row replaces the per-user (and per-API-key) rate limit and the user's
token quotas. A NULL field keeps the default; 0 tokens means unlimited.

Each gateway keeps what it read for ``limits.overrides_cache_seconds``: the set of tenants that have any
row (one query for the whole gateway), and per caller its tenant's and its own rows (one query, only for
a tenant that has rows). A request of a tenant without rows therefore costs a dictionary lookup. A
change made through this gateway applies at once (:meth:`LimitOverrides.invalidate`); other gateways
see it within the cache period. See docs/limits.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from limits import RateLimitItem, parse_many
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opentier.db.models.gateway import LimitOverride
from opentier.errors import InvalidRequestError

log = logging.getLogger(__name__)

#: Key of the :class:`LimitOverrides` in ``gateway_state().extras``.
EXTRAS_KEY = "limit_overrides"
#: Callers whose rows a gateway keeps at most (beyond it, expired entries go first, then all).
MAX_CACHED_CALLERS = 50_000
#: Seconds between two log lines about overrides that cannot be read.
WARNING_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Override:
    """One row: what it sets (None: the default)."""

    requests: str | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> Override:
        return cls(row.requests, row.tokens_per_day, row.tokens_per_month, row.updated_at)


@dataclass(frozen=True, slots=True)
class CallerOverrides:
    """What the overrides say for one caller: its tenant's row and its own, and their rate limits parsed
    (None: no override, the default applies; ``[]``: no limit at all)."""

    tenant: Override | None = None
    user: Override | None = None
    tenant_requests: list[RateLimitItem] | None = None
    user_requests: list[RateLimitItem] | None = None

    @classmethod
    def of(cls, tenant: Override | None, user: Override | None) -> CallerOverrides:
        return cls(
            tenant,
            user,
            _items(tenant.requests) if tenant is not None else None,
            _items(user.requests) if user is not None else None,
        )


#: The overrides of a caller whose tenant has no row.
NO_OVERRIDES = CallerOverrides()


def parse_requests(value: str) -> list[RateLimitItem]:
    """The items of a ``requests`` value (``"60 per minute; 1000 per hour"``; empty: no limit), or a 400
    naming the field."""
    if not value.strip():
        return []
    try:
        return parse_many(value)
    except ValueError as err:
        raise InvalidRequestError(
            f"requests: {err} (use the `limits` notation, e.g. `60 per minute; 1000 per hour`)"
        ) from None


def _items(value: str | None) -> list[RateLimitItem] | None:
    if value is None:
        return None
    try:
        return parse_requests(value)
    except InvalidRequestError:  # written around the routes' check: keep the default rather than fail
        log.warning("a limit override's requests %r cannot be parsed; the default applies", value)
        return None


@dataclass(slots=True)
class _Snapshot:
    """Tenants with rows, and when they were read (monotonic seconds)."""

    tenants: frozenset[str]
    read_at: float


class LimitOverrides:
    """The overrides of one gateway app, read through a cache (``gateway_state().extras``).

    ``engine`` says which database engine to read with (the app's, while it serves); ``clock`` (tests)
    is a monotonic clock in seconds.
    """

    def __init__(
        self,
        cache_seconds: float,
        engine: Callable[[], AsyncEngine | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_seconds = cache_seconds
        self._engine = engine
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._callers: dict[tuple[str, str], tuple[float, CallerOverrides]] = {}
        # Bumped by each local change: a read begun before it must not be kept.
        self._generation = 0
        self._refreshing: asyncio.Lock | None = None
        self._warned_at = -math.inf

    # --- reading -----------------------------------------------------------------------------------

    async def for_caller(self, tenant_id: str, user_id: str) -> CallerOverrides:
        """The overrides of a user of a tenant: a dictionary lookup unless the cache has expired; when
        they cannot be read, the defaults (logged)."""
        tenants = await self.tenants()
        if tenant_id not in tenants:
            return NO_OVERRIDES
        key = (tenant_id, user_id)
        now = self._clock()
        cached = self._callers.get(key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        generation = self._generation
        try:
            found = await self._read_caller(tenant_id, user_id)
        except (SQLAlchemyError, OSError) as err:
            self._failed(err)
            return cached[1] if cached is not None else NO_OVERRIDES
        if generation == self._generation:
            self._keep(key, now, found)
        return found

    async def tenants(self) -> frozenset[str]:
        """Ids of the tenants that have any row (read once per cache period for the whole gateway)."""
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - snapshot.read_at < self.cache_seconds:
            return snapshot.tenants
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:  # one query for all the requests that found it stale
            snapshot = self._snapshot
            now = self._clock()
            if snapshot is not None and now - snapshot.read_at < self.cache_seconds:
                return snapshot.tenants
            generation = self._generation
            try:
                tenants = await self._read_tenants()
            except (SQLAlchemyError, OSError) as err:
                self._failed(err)
                tenants = snapshot.tenants if snapshot is not None else frozenset()
                self._snapshot = _Snapshot(tenants, now)  # try again after a cache period, not per request
                return tenants
            if generation == self._generation:
                self._snapshot = _Snapshot(tenants, now)
            return tenants

    def invalidate(self, tenant_id: str, user_id: str | None = None) -> None:
        """Forget what was read about a tenant (``user_id`` None: its row and every user's of it) or one
        user, so that this gateway applies a change at once."""
        self._generation += 1
        self._snapshot = None
        if user_id is None:
            for key in [key for key in self._callers if key[0] == tenant_id]:
                del self._callers[key]
        else:
            self._callers.pop((tenant_id, user_id), None)

    async def _read_tenants(self) -> frozenset[str]:
        async with self._connected() as conn:
            rows = await conn.execute(sa.select(LimitOverride.tenant_id).distinct())
            return frozenset(str(row[0]) for row in rows)

    async def _read_caller(self, tenant_id: str, user_id: str) -> CallerOverrides:
        """The tenant's row and the user's, in one query."""
        query = sa.select(
            LimitOverride.user_id,
            LimitOverride.requests,
            LimitOverride.tokens_per_day,
            LimitOverride.tokens_per_month,
            LimitOverride.updated_at,
        ).where(
            LimitOverride.tenant_id == uuid.UUID(tenant_id),
            sa.or_(LimitOverride.user_id.is_(None), LimitOverride.user_id == uuid.UUID(user_id)),
        )
        async with self._connected() as conn:
            rows = list(await conn.execute(query))
        tenant = next((Override.of(row) for row in rows if row.user_id is None), None)
        user = next((Override.of(row) for row in rows if row.user_id is not None), None)
        return CallerOverrides.of(tenant, user)

    def _connected(self) -> Any:
        engine = self._engine()
        if engine is None:
            raise _NotOpen("the gateway's database is not open")
        return engine.connect()

    def _keep(self, key: tuple[str, str], now: float, found: CallerOverrides) -> None:
        if len(self._callers) >= MAX_CACHED_CALLERS:
            for stale in [k for k, (at, _) in self._callers.items() if now - at >= self.cache_seconds]:
                del self._callers[stale]
            if len(self._callers) >= MAX_CACHED_CALLERS:
                self._callers.clear()
        self._callers[key] = (now, found)

    def _failed(self, err: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARNING_INTERVAL:
            self._warned_at = now
            log.warning("the limit overrides cannot be read (%s); the defaults apply", err.__class__.__name__)


class _NotOpen(SQLAlchemyError):
    """No engine yet: treated as the database being unreachable."""


# --- the rows, for the admin routes ------------------------------------------------------------------


def _where(tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> sa.ColumnElement[bool]:
    whose = LimitOverride.user_id.is_(None) if user_id is None else LimitOverride.user_id == user_id
    return sa.and_(LimitOverride.tenant_id == tenant_id, whose)


async def get_override(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID | None
) -> Override | None:
    """The row of a tenant (``user_id`` None) or of one of its users; None when there is none."""
    row = await session.scalar(sa.select(LimitOverride).where(_where(tenant_id, user_id)))
    return None if row is None else Override.of(row)


async def put_override(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID | None, override: Override
) -> Override:
    """Replace (or create) the row of a tenant or user with ``override`` (its ``requests`` checked: 400
    when it is not in the ``limits`` notation)."""
    if override.requests is not None:
        parse_requests(override.requests)
    values = {
        "requests": override.requests,
        "tokens_per_day": override.tokens_per_day,
        "tokens_per_month": override.tokens_per_month,
        "updated_at": sa.func.now(),
    }
    statement = (
        insert(LimitOverride)
        .values(tenant_id=tenant_id, user_id=user_id, **values)
        .on_conflict_do_update(index_elements=["tenant_id", "user_id"], set_=values)
        .returning(LimitOverride.updated_at)
    )
    updated_at = (await session.execute(statement)).scalar_one()
    return Override(override.requests, override.tokens_per_day, override.tokens_per_month, updated_at)


async def delete_override(session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> bool:
    """Remove the row of a tenant or user; whether there was one."""
    deleted = await session.execute(
        sa.delete(LimitOverride).where(_where(tenant_id, user_id)).returning(LimitOverride.id)
    )
    return deleted.first() is not None
