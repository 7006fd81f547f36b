"""``opentier admin invite``: invite an address into a tenant through the gateway's admin API
(:mod:`opentier.client.admin.invitations`); the gateway mails the link. See docs/email.md."""

from __future__ import annotations

import click

from opentier.cli.admin_api import admin_client, api_options
from opentier.cli.views import out
from opentier.client.admin import invitations as calls


def attach(group: click.Group) -> None:
    """Add ``invite`` to ``opentier admin``."""
    group.add_command(invite_command)


@click.command("invite")
@click.argument("email")
@click.option(
    "--role", type=click.Choice(["member", "admin"]), default="member", show_default=True, help="Role."
)
@click.option(
    "--tenant-id",
    metavar="ID",
    help="Tenant to invite into (default: the key's own); another tenant needs an operator's key.",
)
@click.option("--name", "display_name", metavar="NAME", help="Display name (the invitee may change it).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@api_options
@click.pass_context
def invite_command(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context,
    email: str,
    role: str,
    tenant_id: str | None,
    display_name: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Invite EMAIL: the user is created without a password and mailed a single-use link to set one.

    Inviting again an address that has not accepted yet mails a fresh link (older ones stop working).

    \b
      opentier admin invite ada@example.org --role admin --name "Ada Lovelace"
      opentier admin invite bob@example.org --tenant-id 9a1b...   # operators only
    """
    with admin_client(ctx, url, api_key, timeout) as client:
        sent = client.send(calls.invite(email, role=role, tenant_id=tenant_id, display_name=display_name))
    if as_json:
        click.echo(sent.model_dump_json(indent=2))
        return
    again = "a fresh invitation (older links stop working)" if sent.resent else "an invitation"
    out.print(f"mailed {again} to {sent.email} (user {sent.user_id}, tenant {sent.tenant_id})")
    out.print(f"the link works once, until {sent.expires_at:%Y-%m-%d %H:%M} UTC")
