"""``opentier admin limits show|set|clear``: a tenant's or a user's rate limit and token quotas, through
the gateway's admin API (:mod:`opentier.client.admin.limits`). A tenant's limits need an operator's key.
See docs/limits.md."""

from __future__ import annotations

import click
from rich.table import Table

from opentier.cli.admin_api import admin_client, api_options
from opentier.cli.views import out
from opentier.client.admin import limits as calls
from opentier.client.admin.limits import Limits


def attach(group: click.Group) -> None:
    """Add ``limits`` to ``opentier admin``."""
    group.add_command(limits_group)


@click.group("limits")
def limits_group() -> None:
    """Rate limits and token quotas of a tenant (operators) or of a user (their tenant's admins), on top
    of the [limits] defaults.

    \b
      opentier admin limits show --user-id 5f0c...
      opentier admin limits set --user-id 5f0c... --requests "3 per minute" --tokens-per-day 50000
      opentier admin limits set --tenant-id 9a1b... --tokens-per-month 2000000
      opentier admin limits clear --tenant-id 9a1b...
    """


def _whose(command: click.decorators.FC) -> click.decorators.FC:
    command = click.option("--user-id", metavar="ID", help="The user's id.")(command)
    return click.option("--tenant-id", metavar="ID", help="The tenant's id.")(command)


def _one(tenant_id: str | None, user_id: str | None) -> None:
    if (tenant_id is None) == (user_id is None):
        raise click.UsageError("give either --tenant-id or --user-id")


@limits_group.command("show")
@_whose
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def show_command(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context,
    tenant_id: str | None,
    user_id: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """The limits set, the limits in effect, and the usage this UTC day and month."""
    _one(tenant_id, user_id)
    with admin_client(ctx, url, api_key, timeout) as client:
        found = client.send(calls.get_limits(tenant_id=tenant_id, user_id=user_id))
    _print(found, as_json)


@limits_group.command("set")
@_whose
@click.option(
    "--requests",
    metavar="LIMITS",
    help='Requests allowed, e.g. "3 per minute; 100 per hour" ("": no limit). A tenant\'s: all its '
    "users together; a user's: replaces per_user and per_api_key.",
)
@click.option("--tokens-per-day", type=click.IntRange(min=0), help="Tokens per UTC day (0: unlimited).")
@click.option(
    "--tokens-per-month", type=click.IntRange(min=0), help="Tokens per UTC calendar month (0: unlimited)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def set_command(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context,
    tenant_id: str | None,
    user_id: str | None,
    requests: str | None,
    tokens_per_day: int | None,
    tokens_per_month: int | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Set the limits, replacing those set before: an option left out goes back to the default."""
    _one(tenant_id, user_id)
    if requests is None and tokens_per_day is None and tokens_per_month is None:
        raise click.UsageError("give --requests, --tokens-per-day or --tokens-per-month (or use `clear`)")
    with admin_client(ctx, url, api_key, timeout) as client:
        found = client.send(
            calls.set_limits(
                tenant_id=tenant_id,
                user_id=user_id,
                requests=requests,
                tokens_per_day=tokens_per_day,
                tokens_per_month=tokens_per_month,
            )
        )
    _print(found, as_json)


@limits_group.command("clear")
@_whose
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def clear_command(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context,
    tenant_id: str | None,
    user_id: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Remove the limits set: the [limits] defaults apply again."""
    _one(tenant_id, user_id)
    with admin_client(ctx, url, api_key, timeout) as client:
        found = client.send(calls.clear_limits(tenant_id=tenant_id, user_id=user_id))
    _print(found, as_json)


def _shown(value: str | int | None, *, tokens: bool = False) -> str:
    if value is None:
        return "default"
    if tokens:
        return "unlimited" if value == 0 else str(value)
    return str(value) if value else "no limit"


def _print(found: Limits, as_json: bool) -> None:
    if as_json:
        click.echo(found.model_dump_json(indent=2))
        return
    whose = f"user {found.user_id}" if found.user_id else f"tenant {found.tenant_id}"
    click.echo(f"limits of {whose}")
    table = Table()
    for column in ("limit", "set", "in effect"):
        table.add_column(column, overflow="fold")
    effective, override = found.effective, found.override
    table.add_row(
        "requests",
        _shown(override.requests if override else None),
        effective.requests or "no limit",
    )
    if found.user_id:
        table.add_row("requests per API key", "", effective.requests_per_api_key or "no limit")
    for field in ("tokens_per_day", "tokens_per_month"):
        table.add_row(
            field.replace("_", " "),
            _shown(getattr(override, field) if override else None, tokens=True),
            _shown(getattr(effective, field), tokens=True),
        )
    out.print(table)
    usage = Table(title="token usage")
    for column in ("period", "used", "limit", "remaining", "resets at (UTC)"):
        usage.add_column(column, no_wrap=True)
    for window in found.usage:
        usage.add_row(
            window.period,
            str(window.used),
            _shown(window.limit, tokens=True),
            "-" if window.remaining is None else str(window.remaining),
            window.resets_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(usage)
