"""``opentier gateway create-admin``: the first admin of a tenant, before anyone can sign in."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys

import click

from opentier.cli import CliState, pass_state
from opentier.db.migrate import migrate
from opentier.gateway.identity.bootstrap import create_admin

PASSWORD_ENV = "OPENTIER_ADMIN_PASSWORD"


@click.command("create-admin")
@click.option("--email", required=True, help="The admin's email; it signs in with it.")
@click.option(
    "--tenant", default=None, help="Tenant name (created when missing); default: auth.default_tenant."
)
@click.option("--name", "display_name", default="", help="Display name.")
@click.option(
    "--generate-password",
    is_flag=True,
    help="Make up a strong password and print it, once; it is not stored anywhere readable.",
)
@pass_state
def create_admin_command(
    state: CliState, email: str, tenant: str | None, display_name: str, generate_password: bool
) -> None:
    """Create an admin user of a tenant.

    The password comes from OPENTIER_ADMIN_PASSWORD, or --generate-password, or is asked for (twice,
    not echoed). The schema is migrated first, so this works on a fresh database.
    """
    settings = state.settings
    password = os.environ.get(PASSWORD_ENV)
    if generate_password:
        password = secrets.token_urlsafe(18)
    elif not password:
        if not sys.stdin.isatty():
            raise click.UsageError(f"set {PASSWORD_ENV}, pass --generate-password, or run in a terminal")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    asyncio.run(migrate(settings, sides=["gateway"]))
    created = asyncio.run(
        create_admin(settings, email=email, password=password, tenant=tenant, display_name=display_name)
    )
    click.echo(f"created admin {created.email} (user {created.user_id}) of tenant {created.tenant}")
    if generate_password:
        click.echo(f"password (shown this once): {password}")
