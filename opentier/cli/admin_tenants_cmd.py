"""``opentier admin tenants list|show|create|suspend|resume|delete``: the platform operator's tenant
operations, through the gateway's admin API (:mod:`opentier.client.admin.tenants`); the key must be an
admin's of the operator tenant. A tenant is named by its name or its id. See docs/admin.md."""

from __future__ import annotations

import importlib
import json
import uuid
from typing import Any

import click
from rich.table import Table

from opentier.cli.admin_api import admin_client, api_options, confirm_or_abort
from opentier.cli.views import out
from opentier.client import Client
from opentier.client.admin import tenants as calls
from opentier.client.admin.tenants import Tenant, TenantDetail

STATUSES = ("active", "suspended", "deleting")
#: The invitation calls (docs/email.md), imported when --admin-email is used.
INVITATIONS = "opentier.client.admin.invitations"


def attach(group: click.Group) -> None:
    """Add ``tenants`` to ``opentier admin``."""
    group.add_command(tenants_group)


@click.group("tenants")
def tenants_group() -> None:
    """Tenants of the deployment (operators only: admins of auth.operator_tenant).

    \b
      opentier admin tenants list --status suspended
      opentier admin tenants create acme --admin-email ada@acme.example
      opentier admin tenants suspend acme
      opentier admin tenants delete acme            # shows what goes, asks for the name
    """


def resolve(client: Client, tenant: str) -> str:
    """The id of ``tenant``, given by id or by name."""
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        pass
    token: str | None = None
    while True:
        page = client.send(calls.list_tenants(page_size=200, page_token=token))
        for found in page.tenants:
            if found.name == tenant:
                return found.id
        token = page.next_page_token
        if not token:
            raise click.ClickException(f"no tenant named {tenant!r}")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _show_tenants(tenants: list[Tenant]) -> None:
    table = Table(title=f"{len(tenants)} tenant(s)")
    for column in ("name", "id", "status", "users", "created"):
        table.add_column(column, overflow="fold")
    for tenant in tenants:
        table.add_row(
            tenant.name,
            tenant.id,
            tenant.status,
            str(tenant.users),
            tenant.created_at.isoformat(" ", "seconds"),
        )
    out.print(table)


def _show_detail(tenant: TenantDetail) -> None:
    table = Table(title=f"tenant {tenant.name} ({tenant.status})", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("id", tenant.id)
    table.add_row("created", tenant.created_at.isoformat(" ", "seconds"))
    for kind, count in tenant.counts().items():
        table.add_row(kind.replace("_", " "), str(count))
    if tenant.data is None:
        table.add_row("host data", f"unknown: {tenant.data_error or 'the host did not answer'}")
    out.print(table)


@tenants_group.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only tenants in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def list_command(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context,
    status: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Every tenant, oldest first, with its status and number of users."""
    found: list[Tenant] = []
    with admin_client(ctx, url, api_key, timeout) as client:
        token: str | None = None
        while True:
            page = client.send(calls.list_tenants(status=status, page_size=200, page_token=token))
            found += page.tenants
            token = page.next_page_token
            if not token:
                break
    if as_json:
        _echo_json([tenant.model_dump(mode="json") for tenant in found])
    else:
        _show_tenants(found)


@tenants_group.command("show")
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def show_command(  # noqa: PLR0917
    ctx: click.Context, tenant: str, as_json: bool, url: str | None, api_key: str | None, timeout: float
) -> None:
    """A tenant (by name or id) with its users, API keys and the host's data counts."""
    with admin_client(ctx, url, api_key, timeout) as client:
        detail = client.send(calls.get_tenant(resolve(client, tenant)))
    if as_json:
        _echo_json(detail.model_dump(mode="json"))
    else:
        _show_detail(detail)


@tenants_group.command("create")
@click.argument("name")
@click.option(
    "--admin-email", metavar="EMAIL", help="Invite this address as the tenant's first admin (sends a mail)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@api_options
@click.pass_context
def create_command(  # noqa: PLR0917
    ctx: click.Context,
    name: str,
    admin_email: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Create an empty, active tenant; with --admin-email, invite its first admin."""
    invited: Any = None
    with admin_client(ctx, url, api_key, timeout) as client:
        created = client.send(calls.create_tenant(name))
        if admin_email is not None:
            try:
                invitations = importlib.import_module(INVITATIONS)
            except ModuleNotFoundError as err:
                if err.name != INVITATIONS:
                    raise
                raise click.ClickException(
                    f"tenant {name!r} was created, but this version cannot send invitations: "
                    "create its first admin with `opentier gateway create-admin`"
                ) from None
            invited = client.send(invitations.invite(admin_email, role="admin", tenant_id=created.id))
    if as_json:
        _echo_json(
            {
                "tenant": created.model_dump(mode="json"),
                "invitation": invited.model_dump(mode="json") if hasattr(invited, "model_dump") else invited,
            }
        )
        return
    out.print(f"created tenant {created.name} ({created.id})")
    if admin_email is not None:
        out.print(f"invited {admin_email} as its admin")


def _set_status(
    ctx: click.Context, tenant: str, status: str, *, url: str | None, api_key: str | None, timeout: float
) -> None:
    with admin_client(ctx, url, api_key, timeout) as client:
        changed = client.send(calls.set_status(resolve(client, tenant), status))
    out.print(f"tenant {changed.name} is {changed.status}")


@tenants_group.command("suspend")
@click.argument("tenant")
@api_options
@click.pass_context
def suspend_command(
    ctx: click.Context, tenant: str, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Suspend a tenant: its sign-ins, tokens and API keys are refused, its open chat streams end."""
    _set_status(ctx, tenant, "suspended", url=url, api_key=api_key, timeout=timeout)


@tenants_group.command("resume")
@click.argument("tenant")
@api_options
@click.pass_context
def resume_command(
    ctx: click.Context, tenant: str, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Make a suspended tenant active again."""
    _set_status(ctx, tenant, "active", url=url, api_key=api_key, timeout=timeout)


@tenants_group.command("delete")
@click.argument("tenant")
@click.option("--confirm", metavar="NAME", help="The tenant's name, instead of typing it at the prompt.")
@api_options
@click.pass_context
def delete_command(  # noqa: PLR0917
    ctx: click.Context,
    tenant: str,
    confirm: str | None,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Delete a tenant and everything it owns: users, API keys, collections, documents, conversations...

    Shows what would be deleted, then asks for the tenant's name (or takes --confirm NAME). The audit log
    is kept. When the host is down the tenant stays `deleting`; run the command again to finish.
    """
    with admin_client(ctx, url, api_key, timeout) as client:
        detail = client.send(calls.get_tenant(resolve(client, tenant)))
        if confirm is None:
            _show_detail(detail)
        confirm_or_abort(f"Type the tenant's name ({detail.name}) to delete it", detail.name, confirm)
        deleted = client.send(calls.delete_tenant(detail.id, confirm=detail.name))
    counts = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in deleted.deleted.items())
    out.print(f"deleted tenant {deleted.name}: {counts}")
