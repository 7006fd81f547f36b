"""Usage and cost reports: the ledger ``gateway.token_usage`` summed per tenant, user, API key or model,
per UTC day or month, priced with ``[usage.prices]``, in one SQL aggregation.

The price of a turn is looked up by the ``model`` it recorded, else by its ``llm`` name. A report row's
``cost`` is the sum of its turns' costs, or None when any of its turns has no price (``unpriced_turns``
says how many): a partial sum would pass for the whole. The REST route (``GET /v1/admin/usage``) and
``opentier admin usage`` both call :func:`usage_report`; :func:`to_csv` is their CSV export.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import UsageSettings
from opentier.db.models.gateway import TokenUsage
from opentier.errors import DatabaseError, InvalidRequestError

GroupBy = Literal["tenant", "user", "api_key", "model"]
Period = Literal["day", "month"]
GROUP_BYS: tuple[GroupBy, ...] = ("tenant", "user", "api_key", "model")
PERIODS: tuple[Period, ...] = ("day", "month")
#: Longest span one report covers (days), so that a typo in a year cannot scan the whole ledger.
MAX_DAYS = 3660
#: The columns of a row, in the order of the CSV export.
CSV_COLUMNS = (
    "period",
    "tenant_id",
    "user_id",
    "api_key_id",
    "llm",
    "model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "turns",
    "estimated_turns",
    "cost",
    "unpriced_turns",
    "currency",
)
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The tokens and cost of one group in one period (columns that are not grouped on are None)."""

    period: str  # "2026-11-27" or "2026-11"
    tenant_id: str
    user_id: str | None
    api_key_id: str | None
    llm: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    turns: int
    estimated_turns: int
    cost: Decimal | None
    unpriced_turns: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One page of a report: rows ordered by period, then by the grouped columns."""

    group_by: GroupBy
    period: Period
    starts_on: date
    ends_on: date  # inclusive
    currency: str
    rows: list[UsageRow]
    #: Offset of the next page, None on the last page.
    next_offset: int | None


def default_span(today: date | None = None) -> tuple[date, date]:
    """From the first day of the current UTC month to today."""
    today = today or datetime.now(UTC).date()
    return today.replace(day=1), today


def _price_case(settings: UsageSettings, attribute: str) -> sa.ColumnElement[Any]:
    """The per-million price of a row's tokens: by its model first, then by its llm; NULL without one."""
    if not settings.prices:
        return sa.null()
    whens: list[tuple[sa.ColumnElement[bool], Any]] = []
    for column in (TokenUsage.model, TokenUsage.llm):
        for name, price in settings.prices.items():
            whens.append((column == name, sa.literal(getattr(price, attribute), sa.Numeric())))
    return sa.case(*whens, else_=sa.null())


async def usage_report(
    engine: AsyncEngine,
    settings: UsageSettings,
    *,
    tenant_id: str | None,
    group_by: GroupBy = "user",
    period: Period = "day",
    starts_on: date | None = None,
    ends_on: date | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> UsageReport:
    """The ledger summed per ``group_by`` and UTC ``period`` over the days [starts_on, ends_on].

    ``tenant_id`` None reads every tenant (the command line's operator); the API always passes the
    caller's. ``limit`` rows from ``offset`` (None: all of them).
    """
    if group_by not in GROUP_BYS:
        raise InvalidRequestError(f"group_by: one of {', '.join(GROUP_BYS)}")
    if period not in PERIODS:
        raise InvalidRequestError(f"period: one of {', '.join(PERIODS)}")
    first, last = default_span()
    starts_on = starts_on or (ends_on.replace(day=1) if ends_on else first)
    ends_on = ends_on or max(last, starts_on)
    if ends_on < starts_on:
        raise InvalidRequestError(f"from ({starts_on}) is after to ({ends_on})")
    if (ends_on - starts_on).days > MAX_DAYS:
        raise InvalidRequestError(f"a report covers at most {MAX_DAYS} days")

    bucket = sa.func.date_trunc(period, sa.func.timezone("UTC", TokenUsage.created_at)).label("bucket")
    grouped: list[Any] = [TokenUsage.tenant_id]
    if group_by == "user":
        grouped.append(TokenUsage.user_id)
    elif group_by == "api_key":
        grouped += [TokenUsage.api_key_id, TokenUsage.user_id]  # no key (a session): one row per user
    elif group_by == "model":
        grouped += [TokenUsage.llm, TokenUsage.model]
    price_in = _price_case(settings, "input_per_million")
    price_out = _price_case(settings, "output_per_million")
    cost = (TokenUsage.input_tokens * price_in + TokenUsage.output_tokens * price_out) / _MILLION
    since = datetime.combine(starts_on, time(), UTC)
    until = datetime.combine(ends_on + timedelta(days=1), time(), UTC)
    query = (
        sa.select(
            bucket,
            *grouped,
            sa.func.coalesce(sa.func.sum(TokenUsage.input_tokens), 0),
            sa.func.coalesce(sa.func.sum(TokenUsage.output_tokens), 0),
            sa.func.count(),
            sa.func.count().filter(TokenUsage.estimated),
            sa.func.sum(cost),
            sa.func.count().filter(price_in.is_(None)) if settings.prices else sa.func.count(),
        )
        .where(TokenUsage.created_at >= since, TokenUsage.created_at < until)
        .group_by(bucket, *grouped)
        .order_by(bucket, *(sa.nulls_first(column.asc()) for column in grouped))
        .offset(offset)
    )
    if tenant_id is not None:
        query = query.where(TokenUsage.tenant_id == _uuid(tenant_id, "tenant_id"))
    if limit is not None:
        query = query.limit(limit + 1)
    try:
        async with engine.connect() as conn:
            found = (await conn.execute(query)).all()
    except SQLAlchemyError as err:
        raise DatabaseError(f"the token usage ledger cannot be read: {err.__class__.__name__}") from err
    more = limit is not None and len(found) > limit
    rows = [_row(group_by, period, tuple(row)) for row in found[:limit]]
    return UsageReport(
        group_by, period, starts_on, ends_on, settings.currency, rows, offset + len(rows) if more else None
    )


def _row(group_by: GroupBy, period: Period, row: tuple[Any, ...]) -> UsageRow:
    bucket: datetime = row[0]
    keys = list(row[1:-6])
    input_tokens, output_tokens, turns, estimated, cost, unpriced = row[-6:]
    tenant = str(keys[0])
    user = api_key = llm = model = None
    if group_by == "user":
        user = str(keys[1])
    elif group_by == "api_key":
        api_key = str(keys[1]) if keys[1] is not None else None
        user = str(keys[2])
    elif group_by == "model":
        llm, model = str(keys[1]), str(keys[2])
    return UsageRow(
        period=bucket.strftime("%Y-%m-%d" if period == "day" else "%Y-%m"),
        tenant_id=tenant,
        user_id=user,
        api_key_id=api_key,
        llm=llm,
        model=model,
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        turns=int(turns),
        estimated_turns=int(estimated),
        cost=Decimal(cost) if cost is not None and not unpriced else None,
        unpriced_turns=int(unpriced),
    )


def _uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError(f"{name}: not a UUID") from None


def shown_cost(cost: Decimal | None) -> str:
    """A cost as reports show it: 6 decimals (fractions of a cent add up), empty when unknown."""
    return "" if cost is None else f"{cost.quantize(Decimal('0.000001'))}"


def to_csv(rows: list[UsageRow], currency: str) -> str:
    """The rows as CSV with a header line (:data:`CSV_COLUMNS`); empty cells for None."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.period,
                row.tenant_id,
                row.user_id or "",
                row.api_key_id or "",
                row.llm if row.llm is not None else "",
                row.model if row.model is not None else "",
                row.input_tokens,
                row.output_tokens,
                row.total_tokens,
                row.turns,
                row.estimated_turns,
                shown_cost(row.cost),
                row.unpriced_turns,
                currency,
            ]
        )
    return out.getvalue()
