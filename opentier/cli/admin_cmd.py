"""``opentier admin``: operators' commands.

``admin usage`` reads the gateway's database directly (no API call, no sign-in: whoever can read the
configuration and reach the database is the operator). The others (tenants, users, keys, limits,
invitations, audit, health) call a gateway's admin API with an admin's API key, so that they are
checked, audited and take effect on open streams exactly as the REST calls do (see
:mod:`opentier.cli.admin_api` and docs/admin.md). Each area lives in its own module, listed in
:data:`API_MODULES`, whose ``attach(group)`` adds its commands.
"""

from __future__ import annotations

import asyncio
import importlib
from datetime import date, datetime

import click
import sqlalchemy as sa
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.remote_cmd import RemoteGroup
from opentier.cli.views import out
from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.db.models.gateway import Tenant
from opentier.errors import NotFoundError
from opentier.gateway.usage.report import (
    GROUP_BYS,
    PERIODS,
    GroupBy,
    Period,
    UsageReport,
    shown_cost,
    to_csv,
    usage_report,
)

#: Modules of the API commands; each has ``attach(group: click.Group) -> None``.
API_MODULES = (
    "opentier.cli.admin_tenants_cmd",
    "opentier.cli.admin_users_cmd",
    "opentier.cli.admin_limits_cmd",
    "opentier.cli.admin_mail_cmd",
)


@click.group("admin", cls=RemoteGroup)
def command() -> None:
    """Operate a deployment: tenants, users, API keys, limits, the audit log, health, and usage and
    cost reports (docs/admin.md, docs/usage-reports.md).

    \b
      opentier admin tenants list
      opentier admin invite ada@example.org --role admin
      opentier admin audit --action user.
      opentier admin usage --group-by model --period month

    Commands other than `usage` call the gateway's API: the URL and an admin's API key come from
    --url/--api-key, then OPENTIER_URL and OPENTIER_API_KEY, then `opentier remote login`'s file.
    """


def _day(_ctx: click.Context, _param: click.Parameter, value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@command.command("usage")
@click.option("--tenant", default=None, help="Tenant name; default: every tenant.")
@click.option(
    "--group-by",
    type=click.Choice(GROUP_BYS),
    default="user",
    show_default=True,
    help="One row per tenant, user, API key or model, and period.",
)
@click.option(
    "--period", type=click.Choice(PERIODS), default="day", show_default=True, help="UTC day or month."
)
@click.option(
    "--from",
    "starts_on",
    type=click.DateTime(["%Y-%m-%d"]),
    callback=_day,
    help="First UTC day (default: the 1st of the current month).",
)
@click.option(
    "--to", "ends_on", type=click.DateTime(["%Y-%m-%d"]), callback=_day, help="Last UTC day (default: today)."
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (for a spreadsheet) instead of a table.")
@pass_state
def usage_command(  # noqa: PLR0917 (click passes every option positionally)
    state: CliState,
    tenant: str | None,
    group_by: GroupBy,
    period: Period,
    starts_on: date | None,
    ends_on: date | None,
    as_csv: bool,
) -> None:
    """Token usage and cost per tenant, user, API key or model, per UTC day or month.

    Reads the usage ledger of the gateway's database; costs come from [usage.prices] of the
    configuration (empty cost: a model without a price).
    """
    report, names = asyncio.run(
        _report(
            state.settings, tenant, group_by=group_by, period=period, starts_on=starts_on, ends_on=ends_on
        )
    )
    if as_csv:
        click.echo(to_csv(report.rows, report.currency), nl=False)
        return
    _show(report, names)


async def _report(
    settings: Settings,
    tenant: str | None,
    *,
    group_by: GroupBy,
    period: Period,
    starts_on: date | None,
    ends_on: date | None,
) -> tuple[UsageReport, dict[str, str]]:
    """The whole report, and the names of the tenants (by id) to show it with."""
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            names = {str(row.id): row.name for row in await conn.execute(sa.select(Tenant.id, Tenant.name))}
        tenant_id = None
        if tenant is not None:
            found = [tenant_id for tenant_id, name in names.items() if name == tenant]
            if not found:
                raise NotFoundError(f"no tenant named {tenant!r}")
            tenant_id = found[0]
        report = await usage_report(
            engine,
            settings.usage,
            tenant_id=tenant_id,
            group_by=group_by,
            period=period,
            starts_on=starts_on,
            ends_on=ends_on,
        )
        return report, names
    finally:
        await engine.dispose()


def _show(report: UsageReport, names: dict[str, str]) -> None:
    title = f"token usage per {report.group_by} and {report.period}, {report.starts_on} to {report.ends_on}"
    if not report.rows:
        out.print(f"no chat turns recorded ({title})")
        return
    table = Table(title=title)
    table.add_column(report.period, no_wrap=True)
    table.add_column("tenant", overflow="fold")
    if report.group_by in ("user", "api_key"):
        table.add_column("user", overflow="fold")
    if report.group_by == "api_key":
        table.add_column("api key", overflow="fold")
    if report.group_by == "model":
        table.add_column("llm", overflow="fold")
        table.add_column("model", overflow="fold")
    for column in ("input", "output", "total", "turns", "estimated", f"cost ({report.currency})"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in report.rows:
        cells = [row.period, names.get(row.tenant_id, row.tenant_id)]
        if report.group_by in ("user", "api_key"):
            cells.append(row.user_id or "")
        if report.group_by == "api_key":
            cells.append(row.api_key_id or "(session)")
        if report.group_by == "model":
            cells += [row.llm or "", row.model or ""]
        cells += [
            str(row.input_tokens),
            str(row.output_tokens),
            str(row.total_tokens),
            str(row.turns),
            str(row.estimated_turns),
            shown_cost(row.cost) or "-",
        ]
        table.add_row(*cells)
    out.print(table)


def _attach_api_commands() -> None:
    for name in API_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # not written yet
            raise
        module.attach(command)


_attach_api_commands()
