"""``opentier admin users …``, ``admin keys …``, ``admin audit`` and ``admin health``: a tenant admin's
operations on its users and API keys, its audit log and the platform's health, through the gateway's
admin API (:mod:`opentier.client.admin.users`, :mod:`~opentier.client.admin.keys`,
:mod:`~opentier.client.admin.audit`). A user is named by its id or its email. See docs/admin-users.md.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from opentier.cli.admin_api import admin_client, api_options, confirm_or_abort
from opentier.cli.views import out
from opentier.client import Client
from opentier.client.admin import audit as audit_calls
from opentier.client.admin import keys as key_calls
from opentier.client.admin import users as user_calls
from opentier.client.admin.audit import AuditEvent, Health
from opentier.client.admin.users import User
from opentier.client.models import ApiKey

ROLES = ("admin", "member")
#: Most events or keys one call of the API returns.
PAGE_SIZE = 200
TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def attach(group: click.Group) -> None:
    """Add ``users``, ``keys``, ``audit`` and ``health`` to ``opentier admin``."""
    group.add_command(users_group)
    group.add_command(keys_group)
    group.add_command(audit_command)
    group.add_command(health_command)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _moment(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def all_users(client: Client) -> list[User]:
    found: list[User] = []
    token: str | None = None
    while True:
        page = client.send(user_calls.list_users(page_size=PAGE_SIZE, page_token=token))
        found += page.users
        token = page.next_page_token
        if not token:
            return found


def resolve_user(client: Client, user: str) -> str:
    """The id of ``user``, given by id or by email (in any case)."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    for found in all_users(client):
        if found.email.lower() == user.strip().lower():
            return found.id
    raise click.ClickException(f"no user with the email {user!r} in your tenant")


# -- users ------------------------------------------------------------------------------------------


@click.group("users")
def users_group() -> None:
    """Users of your tenant (a tenant admin's key).

    \b
      opentier admin users list
      opentier admin users role ada@example.org admin
      opentier admin users disable bob@example.org     # ends bob's open chat streams
      opentier admin users logout bob@example.org --revoke-api-keys
    """


def _show_users(users: list[User]) -> None:
    table = Table(title=f"{len(users)} user(s)")
    for column in ("email", "id", "role", "state", "last sign-in"):
        table.add_column(column, overflow="fold")
    for user in users:
        state = "disabled" if user.disabled else "active"
        table.add_row(user.email, user.id, user.role, state, _moment(user.last_login_at))
    out.print(table)


def _show_user(user: User) -> None:
    table = Table(title=f"user {user.email}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for what, value in (
        ("id", user.id),
        ("name", user.display_name or "-"),
        ("role", user.role),
        ("state", "disabled" if user.disabled else "active"),
        ("created", _moment(user.created_at)),
        ("last sign-in", _moment(user.last_login_at)),
    ):
        table.add_row(what, value)
    out.print(table)


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def users_list(
    ctx: click.Context, as_json: bool, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Every user of your tenant, oldest first."""
    with admin_client(ctx, url, api_key, timeout) as client:
        found = all_users(client)
    if as_json:
        _echo_json([user.model_dump(mode="json") for user in found])
    else:
        _show_users(found)


@users_group.command("show")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def users_show(  # noqa: PLR0917 (click passes every option positionally)
    ctx: click.Context, user: str, as_json: bool, url: str | None, api_key: str | None, timeout: float
) -> None:
    """One user (by id or email)."""
    with admin_client(ctx, url, api_key, timeout) as client:
        found = client.send(user_calls.get_user(resolve_user(client, user)))
    if as_json:
        _echo_json(found.model_dump(mode="json"))
    else:
        _show_user(found)


@users_group.command("role")
@click.argument("user")
@click.argument("role", type=click.Choice(ROLES))
@api_options
@click.pass_context
def users_role(  # noqa: PLR0917
    ctx: click.Context, user: str, role: str, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Make a user an admin or a member (a tenant keeps at least one active admin)."""
    with admin_client(ctx, url, api_key, timeout) as client:
        changed = client.send(user_calls.set_role(resolve_user(client, user), role))
    out.print(f"{changed.email} is now {changed.role}")


@users_group.command("disable")
@click.argument("user")
@api_options
@click.pass_context
def users_disable(
    ctx: click.Context, user: str, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Disable a user: its sign-ins, tokens and API keys are refused and its open chat streams end."""
    with admin_client(ctx, url, api_key, timeout) as client:
        changed = client.send(user_calls.disable_user(resolve_user(client, user)))
    out.print(f"{changed.email} is disabled; its sessions and open streams were ended")


@users_group.command("enable")
@click.argument("user")
@api_options
@click.pass_context
def users_enable(ctx: click.Context, user: str, url: str | None, api_key: str | None, timeout: float) -> None:
    """Enable a disabled user again (it signs in anew; its API keys work again unless revoked)."""
    with admin_client(ctx, url, api_key, timeout) as client:
        changed = client.send(user_calls.enable_user(resolve_user(client, user)))
    out.print(f"{changed.email} is enabled")


@users_group.command("logout")
@click.argument("user")
@click.option("--revoke-api-keys", is_flag=True, help="Revoke the user's API keys too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@api_options
@click.pass_context
def users_logout(  # noqa: PLR0917
    ctx: click.Context,
    user: str,
    revoke_api_keys: bool,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Log a user out everywhere: every session ends, with its open chat streams; with
    --revoke-api-keys its API keys are revoked too."""
    with admin_client(ctx, url, api_key, timeout) as client:
        done = client.send(
            user_calls.logout_user(resolve_user(client, user), revoke_api_keys=revoke_api_keys)
        )
    if as_json:
        _echo_json(done.model_dump(mode="json"))
        return
    out.print(
        f"{done.user.email}: {done.sessions_ended} session(s) ended, "
        f"{len(done.api_keys_revoked)} API key(s) revoked, {done.streams_ended} open stream(s) ended"
    )


@users_group.command("delete")
@click.argument("user")
@click.option("--confirm", metavar="EMAIL", help="The user's email, to skip the question.")
@api_options
@click.pass_context
def users_delete(  # noqa: PLR0917
    ctx: click.Context, user: str, confirm: str | None, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Delete a user with its sessions and API keys, after typing its email (the audit log keeps what
    it did)."""
    with admin_client(ctx, url, api_key, timeout) as client:
        found = client.send(user_calls.get_user(resolve_user(client, user)))
        confirm_or_abort(f"type {found.email} to delete this user", found.email, confirm)
        client.send(user_calls.delete_user(found.id))
    out.print(f"deleted {found.email}")


# -- keys -------------------------------------------------------------------------------------------


@click.group("keys")
def keys_group() -> None:
    """API keys of every user of your tenant (a tenant admin's key). Keys are never shown, only their
    prefix.

    \b
      opentier admin keys list --user bob@example.org --active
      opentier admin keys revoke 5b0c…                # ends the streams running on it
    """


def _show_keys(keys: list[ApiKey], emails: dict[str, str]) -> None:
    table = Table(title=f"{len(keys)} API key(s)")
    for column in ("id", "name", "prefix", "owner", "scopes", "state", "created", "last used", "expires"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.prefix,
            emails.get(key.owner_id, key.owner_id),
            ",".join(key.scopes),
            key.state,
            _moment(key.created_at),
            _moment(key.last_used_at),
            _moment(key.expires_at),
        )
    out.print(table)


@keys_group.command("list")
@click.option("--user", metavar="USER", help="Only the keys of this user (id or email).")
@click.option("--active/--inactive", default=None, help="Only keys that work / only revoked or expired ones.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Show at most this many (newest first)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@api_options
@click.pass_context
def keys_list(  # noqa: PLR0917
    ctx: click.Context,
    user: str | None,
    active: bool | None,
    limit: int | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """The API keys of your tenant, newest first."""
    found: list[ApiKey] = []
    with admin_client(ctx, url, api_key, timeout) as client:
        user_id = None if user is None else resolve_user(client, user)
        token: str | None = None
        while limit is None or len(found) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
            page = client.send(
                key_calls.list_keys(user_id=user_id, active=active, page_size=size, page_token=token)
            )
            found += page.keys
            token = page.next_page_token
            if not token:
                break
        emails = {} if as_json else {u.id: u.email for u in all_users(client)}
    if as_json:
        _echo_json([key.model_dump(mode="json") for key in found])
    else:
        _show_keys(found, emails)


@keys_group.command("revoke")
@click.argument("key_id")
@api_options
@click.pass_context
def keys_revoke(
    ctx: click.Context, key_id: str, url: str | None, api_key: str | None, timeout: float
) -> None:
    """Revoke an API key of any user of your tenant: it stops working at once, and the chat streams
    running on it end."""
    with admin_client(ctx, url, api_key, timeout) as client:
        key = client.send(key_calls.revoke_key(key_id))
    out.print(f"revoked {key.name} ({key.prefix}…)")


# -- audit and health -------------------------------------------------------------------------------


def _show_events(events: list[AuditEvent]) -> None:
    table = Table(title=f"{len(events)} audit event(s), newest first")
    for column in ("at", "action"):
        table.add_column(column, no_wrap=True)
    for column in ("actor", "target", "address", "details"):
        table.add_column(column, overflow="fold")
    for event in events:
        actor = event.actor_user_id or "-"
        if event.actor_api_key_id:
            actor += f" (key {event.actor_api_key_id})"
        details = json.dumps(event.details, separators=(",", ":")) if event.details else ""
        table.add_row(
            _moment(event.at), event.action, actor, event.target or "", event.address or "", details
        )
    out.print(table)


@click.command("audit")
@click.option("--actor", metavar="USER", help="Only what this user did (id or email).")
@click.option("--action", help="Only this action (user.disabled), or a prefix ending in `.` (user.).")
@click.option(
    "--since", type=click.DateTime(TIME_FORMATS), help="From this time (UTC unless an offset is given)."
)
@click.option("--until", type=click.DateTime(TIME_FORMATS), help="Before this time.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most events to show."
)
@click.option("--page-token", help="Go on from where a previous listing stopped (it prints the token).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the events and next_page_token).")
@api_options
@click.pass_context
def audit_command(  # noqa: PLR0917
    ctx: click.Context,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    page_token: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
) -> None:
    """Your tenant's audit log, newest first: who did what, to what, from where."""
    events: list[AuditEvent] = []
    token = page_token
    with admin_client(ctx, url, api_key, timeout) as client:
        actor_id = None if actor is None else resolve_user(client, actor)
        while len(events) < limit:
            page = client.send(
                audit_calls.list_events(
                    actor=actor_id,
                    action=action,
                    since=since,
                    until=until,
                    page_size=min(PAGE_SIZE, limit - len(events)),
                    page_token=token,
                )
            )
            events += page.events
            token = page.next_page_token
            if not token:
                break
    if as_json:
        _echo_json({"events": [event.model_dump(mode="json") for event in events], "next_page_token": token})
        return
    _show_events(events)
    if token:
        out.print(f"more: --page-token {token}")


def _show_health(health: Health) -> None:
    hosts = Table(title="hosts")
    hosts.add_column("target", overflow="fold")
    hosts.add_column("health")
    for target, status in sorted(health.hosts.items()):
        hosts.add_row(target, status)
    out.print(hosts)
    plugins = Table(title=f"{len(health.plugins)} plugin(s)")
    for column in ("plugin", "version", "components"):
        plugins.add_column(column, overflow="fold")
    for plugin in health.plugins:
        components = ", ".join(f"{c.kind} {c.name}" for c in plugin.components)
        plugins.add_row(plugin.name, plugin.version or "-", components)
    out.print(plugins)
    for failure in health.plugin_failures:
        out.print(f"plugin {failure.name} failed to load: {failure.error}")
    if health.plugins_error:
        out.print(f"plugins unknown: {health.plugins_error}")


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@api_options
@click.pass_context
def health_command(
    ctx: click.Context, as_json: bool, url: str | None, api_key: str | None, timeout: float
) -> None:
    """The health of each intelligence host and the plugins they loaded; exits 1 when a host is not
    serving or a plugin failed to load."""
    with admin_client(ctx, url, api_key, timeout) as client:
        health = client.send(audit_calls.health())
    if as_json:
        _echo_json(health.model_dump(mode="json"))
    else:
        _show_health(health)
    if not health.serving or health.plugin_failures:
        ctx.exit(1)
