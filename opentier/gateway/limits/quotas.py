"""Token quotas per tenant and per user, per UTC day and per UTC calendar month.

Usage is charged from the ``usage`` events the host streams (input + output tokens of each turn) into a
ledger in the gateway's database (table ``gateway.token_usage``, one row per turn); a quota compares a
period's sum with ``limits.*_tokens_per_*`` (0: unlimited). A check reads today's rows of the tenant
(or the user) from an index that carries the token counts; the days of the month before today never
change, so their sum is read once per day and kept in memory.

Charging is off the answer's path: :meth:`TokenQuotas.charge` only records the turn in memory, where
every check counts it at once, and a per-app writer task writes what was recorded in one multi-row
INSERT every :data:`FLUSH_SECONDS` (sooner once :data:`FLUSH_ROWS` wait), retrying with backoff while
the database refuses. :meth:`TokenQuotas.close` (the app stopping) writes everything before it returns;
a killed process loses at most what it had not written yet (docs/limits.md).

An admin may set a tenant's or a user's quotas (:mod:`.overrides`): they replace the defaults for that
tenant or user, read through the per-gateway cache. :attr:`TokenQuotas.exhausted_listeners` are told,
in background tasks, when a quota is used up (once per quota, period and limit per gateway).

Quotas are soft by design: a turn is let in while the quota has tokens left, and the chat turn stops
itself once its estimated tokens reach what was left (see :class:`opentier.gateway.chat.turn.ChatTurn`),
so concurrent turns of one caller can overrun a quota by at most their own answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import LimitsSettings
from opentier.db.models.gateway import SCHEMA, TokenUsage
from opentier.errors import DatabaseError, OpenTierError, QuotaExceededError
from opentier.gateway.limits.overrides import LimitOverrides, Override
from opentier.gateway.principal import Principal

#: Characters per token assumed while a turn streams, before the host reports the real counts.
CHARS_PER_TOKEN = 4
#: Key of the :class:`TokenQuotas` in ``gateway_state().extras``.
EXTRAS_KEY = "quotas"
#: Longest a recorded charge waits for others before the writer writes it.
FLUSH_SECONDS = 0.05
#: Charges waiting that make the writer write at once.
FLUSH_ROWS = 200
#: Most rows of one INSERT (11 parameters a row, PostgreSQL takes at most 32767).
BATCH_ROWS = 1000
#: First and longest wait before a refused write is tried again (doubled in between).
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
#: Longest :meth:`TokenQuotas.close` waits for the exhausted listeners still running.
LISTENERS_GRACE_SECONDS = 5.0
#: Longest wait for a ledger write in progress before the usage figures are summed (see ``_steady``).
STEADY_WAIT_SECONDS = 1.0

log = logging.getLogger(__name__)

Scope = Literal["tenant", "user"]
Period = Literal["day", "month"]
SCOPES: tuple[Scope, ...] = ("tenant", "user")
PERIODS: tuple[Period, ...] = ("day", "month")
#: The quotas of one caller, per (scope, period); 0: unlimited.
Limits = dict[tuple[Scope, Period], int]


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


#: Told that a caller used up a quota (``window.used >= window.limit``); see
#: :attr:`TokenQuotas.exhausted_listeners`.
ExhaustedListener = Callable[[Principal, QuotaWindow], Awaitable[None]]


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
#: The ledger's columns a charge fills, with their PostgreSQL types.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("created_at", "timestamptz"),
    ("tenant_id", "uuid"),
    ("user_id", "uuid"),
    ("api_key_id", "uuid"),
    ("conversation_id", "text"),
    ("message_id", "text"),
    ("llm", "text"),
    ("model", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("estimated", "boolean"),
)
# One statement whatever the number of rows (one array per column), so it is prepared once.
_INSERT = sa.text(
    f"INSERT INTO {SCHEMA}.{TokenUsage.__tablename__} ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind in _COLUMNS)})"
)


@dataclass(slots=True)
class _Tally:
    """Tokens and turns recorded but not written yet."""

    input_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, input_tokens: int, output_tokens: int, turns: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.turns += turns


@dataclass(frozen=True, slots=True, eq=False)
class _Recorded:
    """One charge waiting for the writer: its ledger row, the UTC day it counts in, its place in line."""

    seq: int
    day: date
    row: dict[str, Any]

    @property
    def owners(self) -> tuple[tuple[Scope, str], tuple[Scope, str]]:
        return ("tenant", str(self.row["tenant_id"])), ("user", str(self.row["user_id"]))


class TokenQuotas:
    """Checks and charges token quotas; one per gateway app (``gateway_state().extras["quotas"]``).

    Built with the ``[limits]`` settings and the gateway's :class:`~.overrides.LimitOverrides` (None:
    the defaults only); :meth:`open` gives it the gateway's database engine and starts the ledger writer
    when the app starts serving, :meth:`close` writes what is left when it stops. ``clock`` (tests) says
    what time it is.
    """

    def __init__(
        self,
        settings: LimitsSettings,
        engine: AsyncEngine | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        flush_seconds: float = FLUSH_SECONDS,
        flush_rows: int = FLUSH_ROWS,
        overrides: LimitOverrides | None = None,
    ) -> None:
        #: The defaults (``[limits]``); :meth:`limits_for` says what applies to a caller.
        self.limits: Limits = {
            ("tenant", "day"): settings.tenant_tokens_per_day,
            ("tenant", "month"): settings.tenant_tokens_per_month,
            ("user", "day"): settings.user_tokens_per_day,
            ("user", "month"): settings.user_tokens_per_month,
        }
        self.engine = engine
        self.clock = clock
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        # Sums of the month's days before today, per (scope, id); the days gone by never change.
        self._earlier: dict[tuple[Scope, str], int] = {}
        self._earlier_day: date | None = None
        # Bumped when rows of days before today reach the ledger: a sum read before is stale.
        self._earlier_generation = 0
        # Charges recorded and not written yet, oldest first, and their sums per (scope, id) and day.
        self._recorded: deque[_Recorded] = deque()
        self._unwritten: dict[tuple[Scope, str], dict[date, _Tally]] = {}
        self._last_seq = 0
        self._writing = asyncio.Lock()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.overrides = overrides
        #: Called (each in its own background task; errors logged, never raised to the request) when
        #: :meth:`check` refuses or :meth:`charge` makes a quota used up, once per quota (scope, owner,
        #: period, limit) and period per gateway.
        self.exhausted_listeners: list[ExhaustedListener] = []
        self._told: dict[tuple[str, str, str, int, str], datetime] = {}
        self._background: set[asyncio.Task[None]] = set()

    def open(self, engine: AsyncEngine) -> None:
        """Use ``engine`` and start the ledger writer (call it in the app's event loop)."""
        self.engine = engine
        self._closing = False
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_continuously(), name="token usage ledger writer"
            )

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Write every charge recorded so far, stop the writer and let go of the engine.

        Waits while the database refuses, for up to ``timeout`` seconds (None: as long as it takes);
        what is still unwritten then is logged, one error line per charge, and lost.
        """
        self._closing = True
        self._wake.set()
        writer, self._writer = self._writer, None
        await self._stop_listeners()
        try:
            if writer is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(writer), timeout)
                except TimeoutError:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await writer
            elif self._recorded and self.engine is not None:
                with contextlib.suppress(DatabaseError):
                    await self.flush(timeout)
        finally:
            for recorded in self._recorded:
                log.error("token usage lost, the ledger closed before writing it: %s", _described(recorded))
            self._recorded.clear()
            self._unwritten.clear()
            self.engine = None
            self._earlier.clear()

    @property
    def active(self) -> bool:
        """Whether a quota may apply to someone: a default one, or one an admin may set (without either,
        checks cost nothing)."""
        return any(self.limits.values()) or self.overrides is not None

    async def limits_for(self, principal: Principal) -> Limits:
        """The caller's quotas: the defaults, each replaced by the tenant's or the user's override when
        an admin set one (a cached read, see :mod:`.overrides`)."""
        if self.overrides is None:
            return self.limits
        found = await self.overrides.for_caller(principal.tenant_id, principal.user_id)
        if found.tenant is None and found.user is None:
            return self.limits
        limits = dict(self.limits)
        rows: tuple[tuple[Scope, Override | None], ...] = (("tenant", found.tenant), ("user", found.user))
        for scope, row in rows:
            if row is None:
                continue
            if row.tokens_per_day is not None:
                limits[(scope, "day")] = row.tokens_per_day
            if row.tokens_per_month is not None:
                limits[(scope, "month")] = row.tokens_per_month
        return limits

    @property
    def unwritten(self) -> int:
        """Charges recorded and not yet in the ledger."""
        return len(self._recorded)

    # --- the contract ChatTurn uses ---------------------------------------------------------------

    async def tightest(self, principal: Principal) -> QuotaWindow | None:
        """The caller's quota with the least left (None: no quota applies)."""
        return _tightest(await self.windows(principal))

    async def check(self, principal: Principal) -> QuotaWindow | None:
        """:meth:`tightest`, refused with :class:`~opentier.errors.QuotaExceededError` when used up
        (and the :attr:`exhausted_listeners` told, in the background)."""
        windows = await self.windows(principal)
        window = _tightest(windows)
        if window is not None and window.remaining <= 0:
            self._tell_exhausted(principal, windows)
            raise exceeded(window, self.clock())
        return window

    def charge(self, principal: Principal, charge: UsageCharge) -> None:
        """Record one turn's tokens against the caller's tenant, user and API key, without waiting.

        Every check counts them from now on; the ledger writer writes them within
        :attr:`flush_seconds` (:meth:`flush` writes them now).
        """
        now = self.clock()
        self._last_seq += 1
        recorded = _Recorded(
            self._last_seq,
            now.astimezone(UTC).date(),
            {
                "created_at": now,
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
            },
        )
        self._recorded.append(recorded)
        self._count(recorded, 1)
        if self._closing:
            log.error("token usage recorded after the ledger closed: %s", _described(recorded))
        if len(self._recorded) == 1 or len(self._recorded) >= self.flush_rows:
            self._wake.set()
        if self.exhausted_listeners and not self._closing:
            self._in_background(self._after_charge(principal), "token quota check after a charge")

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Write every charge recorded so far into the ledger, up to :data:`BATCH_ROWS` in one INSERT.

        A write the database refuses is tried again with backoff (and logged), for up to ``timeout``
        seconds (None: until it succeeds); then :class:`~opentier.errors.DatabaseError` is raised and the
        charges stay recorded. A row the database rejects for itself (not for being down) is logged and
        dropped, so that it cannot hold back the others.
        """
        last = self._last_seq
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._writing:
            size, delay, failures = BATCH_ROWS, RETRY_FIRST_SECONDS, 0
            while self._recorded and self._recorded[0].seq <= last:
                batch = [found for found in itertools.islice(self._recorded, size) if found.seq <= last]
                engine = self._engine()
                try:
                    await self._insert(engine, batch)
                except (IntegrityError, DataError) as err:
                    if len(batch) > 1:
                        size = 1  # find the row it refuses
                        continue
                    log.error(
                        "token usage dropped, the ledger refuses it (%s): %s",
                        err.__class__.__name__,
                        _described(batch[0]),
                    )
                    self._written(batch)
                    continue
                except Exception as err:  # down, restarting, out of connections: keep them and retry
                    failures += 1
                    log.warning(
                        "the token usage ledger refused %d charges (%s, attempt %d); retrying in %.1fs",
                        len(batch),
                        err.__class__.__name__,
                        failures,
                        delay,
                    )
                    if deadline is not None and time.monotonic() + delay > deadline:
                        raise DatabaseError(
                            f"the token usage of {len(self._recorded)} turns could not be written: "
                            f"{err.__class__.__name__}"
                        ) from err
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX_SECONDS)
                    continue
                self._written(batch)
                delay = RETRY_FIRST_SECONDS

    # --- reading the ledger -------------------------------------------------------------------------

    async def windows(self, principal: Principal) -> list[QuotaWindow]:
        """Every quota that applies to the caller, with the tokens used in its current period (those
        recorded and not yet written included)."""
        if not self.active:
            return []
        limits = await self.limits_for(principal)
        if not any(limits.values()):
            return []
        now = self.clock()
        day_start, day_end = period_bounds("day", now)
        month_start, month_end = period_bounds("month", now)
        # Read before the ledger: a charge written meanwhile then counts twice for a moment, never not
        # at all (a quota errs on the side of refusing).
        owners = _owners(principal)
        unwritten_today = {
            scope: self._unwritten_sum(owners[scope], day_start.date(), None).total for scope in SCOPES
        }
        unwritten_earlier = {
            scope: self._unwritten_sum(owners[scope], month_start.date(), day_start.date()).total
            for scope in SCOPES
        }
        tenant_today, user_today = await self._sums(principal, limits, since=day_start, until=None)
        today = {"tenant": tenant_today, "user": user_today}
        earlier = await self._earlier_in_month(principal, limits, month_start, day_start)
        found = []
        for (scope, period), limit in limits.items():
            if not limit:
                continue
            used = today[scope] + unwritten_today[scope]
            if period == "month":
                used += earlier[scope] + unwritten_earlier[scope]
            ends = day_end if period == "day" else month_end
            found.append(QuotaWindow(scope, period, limit, used, ends.isoformat()))
        return found

    async def summary(self, principal: Principal) -> UsageSummary:
        """The caller's own usage this UTC day and month (recorded turns not yet written included), and
        the quotas that apply to them."""
        now = self.clock()
        day_start, day_end = period_bounds("day", now)
        month_start, month_end = period_bounds("month", now)
        user = _owners(principal)["user"]
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
        async with self._steady():
            unwritten_day = self._unwritten_sum(user, day_start.date(), month_end.date())
            unwritten_month = self._unwritten_sum(user, month_start.date(), month_end.date())
            row = await self._counts(query)
        unwritten_day.add(*row[:3])
        unwritten_month.add(*row[3:])
        return UsageSummary(
            day=PeriodUsage(
                "day",
                day_start,
                day_end,
                unwritten_day.input_tokens,
                unwritten_day.output_tokens,
                unwritten_day.turns,
            ),
            month=PeriodUsage(
                "month",
                month_start,
                month_end,
                unwritten_month.input_tokens,
                unwritten_month.output_tokens,
                unwritten_month.turns,
            ),
            quotas=await self.windows(principal),
        )

    async def _earlier_in_month(
        self, principal: Principal, limits: Limits, month_start: datetime, day_start: datetime
    ) -> dict[Scope, int]:
        """Tokens of the month's days before today, per scope (cached until the day changes)."""
        wanted = [scope for scope in SCOPES if limits[(scope, "month")]]
        if not wanted or day_start == month_start:
            return {"tenant": 0, "user": 0}
        if self._earlier_day != day_start.date():
            self._earlier.clear()
            self._earlier_day = day_start.date()
            self._earlier_generation += 1
        keys = _owners(principal)
        if all(keys[scope] in self._earlier for scope in wanted):
            return {scope: self._earlier.get(keys[scope], 0) for scope in SCOPES}
        generation = self._earlier_generation
        tenant, user = await self._sums(principal, limits, since=month_start, until=day_start)
        if generation == self._earlier_generation:  # else an earlier day's row was written meanwhile
            if _tenant_wide(limits):  # else ``tenant`` is the user's sum only
                self._earlier[keys["tenant"]] = tenant
            self._earlier[keys["user"]] = user
        return {"tenant": tenant, "user": user}

    async def _sums(
        self, principal: Principal, limits: Limits, *, since: datetime, until: datetime | None
    ) -> tuple[int, int]:
        """Tokens of the caller's tenant and of the caller in [since, until); the tenant's sum only when a
        tenant quota is set (otherwise the user's index alone is read)."""
        user_id = uuid.UUID(principal.user_id)
        tenant_wide = _tenant_wide(limits)
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

    async def used(self, tenant_id: str, user_id: str | None = None) -> dict[Period, int]:
        """Tokens a tenant (``user_id`` None) or one of its users spent this UTC day and month (recorded
        turns not yet written included): for the admins' view of limits."""
        now = self.clock()
        day_start, _ = period_bounds("day", now)
        month_start, month_end = period_bounds("month", now)
        conditions = [
            TokenUsage.tenant_id == uuid.UUID(tenant_id),
            TokenUsage.created_at >= month_start,
            TokenUsage.created_at < month_end,
        ]
        if user_id is not None:
            conditions.append(TokenUsage.user_id == uuid.UUID(user_id))
        owner: tuple[Scope, str] = (
            ("tenant", str(uuid.UUID(tenant_id))) if user_id is None else ("user", str(uuid.UUID(user_id)))
        )
        async with self._steady():
            unwritten_day = self._unwritten_sum(owner, day_start.date(), None).total
            unwritten_month = self._unwritten_sum(owner, month_start.date(), month_end.date()).total
            today, month = await self._counts(
                sa.select(
                    sa.func.coalesce(sa.func.sum(_TOKENS).filter(TokenUsage.created_at >= day_start), 0),
                    sa.func.coalesce(sa.func.sum(_TOKENS), 0),
                ).where(*conditions)
            )
        return {"day": today + unwritten_day, "month": month + unwritten_month}

    @contextlib.asynccontextmanager
    async def _steady(self) -> AsyncIterator[None]:
        """Keep the ledger writer still while the figures people read are summed (the charges not yet
        written, then the ledger): a batch written in between would count twice. Waits at most
        :data:`STEADY_WAIT_SECONDS` for a write in progress; a writer retrying against a database that
        is down is not waited for (the figures may then count a charge twice, until it is written).
        Quota checks (:meth:`windows`) never wait: they count a charge twice for a moment instead."""
        try:
            async with asyncio.timeout(STEADY_WAIT_SECONDS):
                await self._writing.acquire()
        except TimeoutError:
            yield
            return
        try:
            yield
        finally:
            self._writing.release()

    # --- telling that a quota is used up ------------------------------------------------------------

    async def _after_charge(self, principal: Principal) -> None:
        self._tell_exhausted(principal, await self.windows(principal))

    def _tell_exhausted(self, principal: Principal, windows: Iterable[QuotaWindow]) -> None:
        """Call the listeners about each used-up window not told yet (in this gateway)."""
        if not self.exhausted_listeners:
            return
        now = self.clock()
        owners = _owners(principal)
        for window in windows:
            if window.used < window.limit:
                continue
            owner = owners["tenant" if window.scope == "tenant" else "user"][1]
            told = (window.scope, owner, window.period, window.limit, window.resets_at)
            if told in self._told:
                continue
            for key in [key for key, ends in self._told.items() if ends <= now]:
                del self._told[key]
            self._told[told] = datetime.fromisoformat(window.resets_at)
            for listener in list(self.exhausted_listeners):
                self._in_background(_call(listener, principal, window), "token quota exhausted listener")

    def _in_background(self, work: Awaitable[None], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stop_listeners(self) -> None:
        """Let the listeners still running finish (a short while), then cancel them."""
        running = set(self._background)
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=LISTENERS_GRACE_SECONDS)
        for task in pending:
            log.warning("cancelled at shutdown: %s", task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # --- the writer ---------------------------------------------------------------------------------

    async def _write_continuously(self) -> None:
        """The ledger writer: a charge waits up to :attr:`flush_seconds` for others (or until
        :attr:`flush_rows` wait), then all are written together; ends once closing and all written."""
        while True:
            if not self._recorded and not self._closing:
                await self._wake.wait()
            if not self._closing and len(self._recorded) < self.flush_rows:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_seconds):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except OpenTierError as err:  # not open: nothing can be written until it is
                log.error("the token usage ledger writer stops: %s", err.message)
                return
            except Exception:  # a bug must not stop the writer: what it holds would never be written
                log.exception("the token usage ledger writer failed; it goes on")
                await asyncio.sleep(RETRY_MAX_SECONDS)
            if self._closing and not self._recorded:
                return

    async def _insert(self, engine: AsyncEngine, batch: list[_Recorded]) -> None:
        columns = {name: [recorded.row[name] for recorded in batch] for name, _ in _COLUMNS}
        async with engine.begin() as conn:
            await conn.execute(_INSERT, columns)

    def _written(self, batch: Iterable[_Recorded]) -> None:
        """Forget ``batch`` (the oldest charges recorded) now that the ledger holds it."""
        stale = False
        for recorded in batch:
            if self._recorded and self._recorded[0] is recorded:
                self._recorded.popleft()
            self._count(recorded, -1)
            stale = stale or (self._earlier_day is not None and recorded.day < self._earlier_day)
        if stale:
            self._earlier.clear()
            self._earlier_generation += 1

    def _count(self, recorded: _Recorded, sign: int) -> None:
        row = recorded.row
        for owner in recorded.owners:
            days = self._unwritten.setdefault(owner, {})
            tally = days.setdefault(recorded.day, _Tally())
            tally.add(sign * row["input_tokens"], sign * row["output_tokens"], sign)
            if tally.turns <= 0:
                del days[recorded.day]
                if not days:
                    del self._unwritten[owner]

    def _unwritten_sum(self, owner: tuple[Scope, str], since: date, until: date | None) -> _Tally:
        """Tokens and turns of ``owner`` recorded and not written, of the UTC days in [since, until)."""
        total = _Tally()
        for day, tally in self._unwritten.get(owner, {}).items():
            if day >= since and (until is None or day < until):
                total.add(tally.input_tokens, tally.output_tokens, tally.turns)
        return total

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise OpenTierError("the token quotas are not open (the gateway is not serving)")
        return self.engine


async def _call(listener: ExhaustedListener, principal: Principal, window: QuotaWindow) -> None:
    await listener(principal, window)


def _tightest(windows: list[QuotaWindow]) -> QuotaWindow | None:
    if not windows:
        return None
    return min(windows, key=lambda w: (w.remaining, -datetime.fromisoformat(w.resets_at).timestamp()))


def _tenant_wide(limits: Limits) -> bool:
    return bool(limits[("tenant", "day")] or limits[("tenant", "month")])


def _owners(principal: Principal) -> dict[Scope, tuple[Scope, str]]:
    return {
        "tenant": ("tenant", str(uuid.UUID(principal.tenant_id))),
        "user": ("user", str(uuid.UUID(principal.user_id))),
    }


def _described(recorded: _Recorded) -> str:
    """A charge as a log line shows it, enough to enter it by hand (no secrets in it)."""
    row = recorded.row
    return (
        f"created_at={row['created_at'].isoformat()} tenant_id={row['tenant_id']} user_id={row['user_id']} "
        f"api_key_id={row['api_key_id']} message_id={row['message_id']} llm={row['llm']} "
        f"model={row['model']} input_tokens={row['input_tokens']} output_tokens={row['output_tokens']} "
        f"estimated={row['estimated']}"
    )


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
