"""``GET /v1/admin/usage``: the tenant's token usage and its cost, per user, API key or model, per UTC day
or month (scope ``admin``; an admin sees its own tenant only). JSON a page at a time, or the whole report
as CSV (``format=csv`` or ``Accept: text/csv``). See docs/usage-reports.md.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, jsonify, request
from quart_schema import document_response, tag, validate_querystring

from opentier.errors import DatabaseError, InvalidRequestError
from opentier.gateway.errors import documented_errors
from opentier.gateway.identity.paging import decode_token, encode_token
from opentier.gateway.principal import current_principal, require
from opentier.gateway.schemas.common import PageQuery
from opentier.gateway.state import gateway_state
from opentier.gateway.usage.report import UsageRow, shown_cost, to_csv, usage_report

blueprint = Blueprint("admin_usage", __name__, url_prefix="/v1/admin")
TAGS = ["Admin"]
#: Rows of a page when ``page_size`` is not given.
DEFAULT_PAGE_SIZE = 50
CSV_TYPE = "text/csv; charset=utf-8"


def blueprints() -> list[Blueprint]:
    return [blueprint]


class UsageReportQuery(PageQuery):
    """What to sum, over which UTC days, and how to answer."""

    model_config = ConfigDict(populate_by_name=True)

    group_by: Literal["tenant", "user", "api_key", "model"] = Field(
        default="user", description="One row per tenant, user, API key or model (llm and model) and period."
    )
    period: Literal["day", "month"] = Field(default="day", description="UTC day or UTC calendar month.")
    from_: date | None = Field(
        default=None, alias="from", description="First UTC day (default: the 1st of the month of `to`)."
    )
    to: date | None = Field(
        default=None, description="Last UTC day, included (default: today, or `from` when later)."
    )
    format: Literal["json", "csv"] | None = Field(
        default=None, description="`csv`: the whole report as CSV (not paged); also `Accept: text/csv`."
    )


class UsageRowOut(BaseModel):
    """The tokens and cost of one group in one period; columns not grouped on are null."""

    period: str = Field(description="`YYYY-MM-DD` (day) or `YYYY-MM` (month), UTC.")
    tenant_id: str
    user_id: str | None = Field(description="With group_by `user` and `api_key`.")
    api_key_id: str | None = Field(description="With group_by `api_key`; null: turns of signed-in sessions.")
    llm: str | None = Field(description="With group_by `model`: the LLM component.")
    model: str | None = Field(description="With group_by `model`: the model it reported (may be empty).")
    input_tokens: int
    output_tokens: int
    total_tokens: int
    turns: int = Field(description="Chat turns.")
    estimated_turns: int = Field(description="Turns whose tokens were estimated (the host reported none).")
    cost: str | None = Field(
        description="Cost in `currency` (decimal string, 6 places); null when a turn's model has no price."
    )
    unpriced_turns: int = Field(description="Turns whose model (or llm) is not in `usage.prices`.")

    @classmethod
    def of(cls, row: UsageRow) -> UsageRowOut:
        return cls(
            period=row.period,
            tenant_id=row.tenant_id,
            user_id=row.user_id,
            api_key_id=row.api_key_id,
            llm=row.llm,
            model=row.model,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            total_tokens=row.total_tokens,
            turns=row.turns,
            estimated_turns=row.estimated_turns,
            cost=shown_cost(row.cost) or None,
            unpriced_turns=row.unpriced_turns,
        )


class UsageReportOut(BaseModel):
    """One page of the report, ordered by period, then by the grouped columns."""

    openapi_media_types: ClassVar[dict[str, dict[str, Any] | None]] = {
        "application/json": None,
        "text/csv": {
            "description": "With `format=csv` or `Accept: text/csv`: a header line, then one line per row "
            "(every row, not paged), the columns of `rows` plus `currency`.",
        },
    }

    group_by: str
    period: str
    starts_on: date = Field(description="First UTC day covered.")
    ends_on: date = Field(description="Last UTC day covered (included).")
    currency: str = Field(description="Currency of `cost` (`usage.currency`).")
    rows: list[UsageRowOut]
    next_page_token: str | None = Field(description="Pass as `page_token` for the next page; null: last.")


def _wants_csv(query: UsageReportQuery) -> bool:
    if query.format is not None:
        return query.format == "csv"
    accepted = request.accept_mimetypes
    return accepted.quality("text/csv") > accepted.quality("application/json")


@blueprint.get("/usage")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 500)
@validate_querystring(UsageReportQuery)
@document_response(UsageReportOut, 200)
async def admin_usage(query_args: UsageReportQuery) -> Response:
    """Token usage and cost of your tenant per user, API key or model, per UTC day or month (scope `admin`).

    Costs come from the price table `usage.prices` of the gateway's configuration. The report reads the
    usage ledger, which gets each turn within a fraction of a second of its `usage` event.
    """
    state = gateway_state()
    if state.engine is None:
        raise DatabaseError("the gateway's database is not open")
    csv_wanted = _wants_csv(query_args)
    offset = 0
    if query_args.page_token and not csv_wanted:
        [given] = decode_token(query_args.page_token, 1)
        if not given.isdigit():
            raise InvalidRequestError("page_token: not a token this server issued")
        offset = int(given)
    report = await usage_report(
        state.engine,
        state.settings.usage,
        tenant_id=current_principal().tenant_id,
        group_by=query_args.group_by,
        period=query_args.period,
        starts_on=query_args.from_,
        ends_on=query_args.to,
        limit=None if csv_wanted else (query_args.page_size or DEFAULT_PAGE_SIZE),
        offset=offset,
    )
    if csv_wanted:
        name = f"usage-{report.group_by}-{report.period}-{report.starts_on}-{report.ends_on}.csv"
        return Response(
            to_csv(report.rows, report.currency),
            content_type=CSV_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    body = UsageReportOut(
        group_by=report.group_by,
        period=report.period,
        starts_on=report.starts_on,
        ends_on=report.ends_on,
        currency=report.currency,
        rows=[UsageRowOut.of(row) for row in report.rows],
        next_page_token=None if report.next_offset is None else encode_token(str(report.next_offset)),
    )
    return jsonify(body.model_dump(mode="json"))
