"""``opentier up``: everything a single machine needs, in one command, stopped by one Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib

import click

from opentier.cli import CliState, pass_state
from opentier.cli.host_cmd import run, serve_until_signal
from opentier.config import Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.url import database_url, display_url
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.host.token import resolve_host_token, token_path
from opentier.plugin_manager import load_plugins


@click.command("up")
@pass_state
def command(state: CliState) -> None:
    """Start OpenTier on this machine and run until Ctrl-C or SIGTERM.

    \b
    1. PostgreSQL: the embedded server (data in database.embedded_dir, by
       default <data_dir>/postgres), or the server database.url names;
    2. the migrations of schema `gateway` and schema `intelligence`;
    3. the plugins, then the gRPC intelligence host on host.address:host.port,
       with its ingestion workers.

    Ctrl-C or SIGTERM stops the host (in-flight calls get host.grace_seconds,
    an ingestion batch in progress is rolled back and resumed at the next
    start), then the embedded PostgreSQL, so that nothing is left running.
    Running it again on the same data folder reuses the data.
    """
    run(_up(state.settings))


async def _up(settings: Settings) -> None:
    embedded = None if settings.database.url else EmbeddedPostgres.from_settings(settings)
    if embedded is not None:
        say(f"starting the embedded PostgreSQL in {embedded.data_dir}")
        # The server must stop even when start-up is interrupted or a later step fails.
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(_stop_database, embedded)
            await asyncio.to_thread(embedded.start)
            await _run_host(settings, embedded)
    else:
        await _run_host(settings, None)


async def _run_host(settings: Settings, embedded: EmbeddedPostgres | None) -> None:
    url = database_url(settings)
    say(f"database: {display_url(url)}")
    revisions = await migrate(settings)
    say("migrations: " + ", ".join(f"{side} at {rev}" for side, rev in revisions.items()))
    plugins = load_plugins(settings)
    for failure in plugins.failures:
        say(f"warning: plugin {failure.name} did not load: {failure.error}")
    token = resolve_host_token(settings)
    server = HostServer(settings, plugins, token, runtime=HostRuntime(settings, plugins.registry))
    await server.start()
    source = "OPENTIER_HOST__TOKEN" if settings.host.token else str(token_path(settings))
    say(f"host: {server.target} (gRPC; token from {source})")
    say(f"plugins: {', '.join(p.name for p in plugins.loaded) or 'none'}")
    say(f"OpenTier is up. Check it: opentier host health --target {server.target}")
    say("Ctrl-C stops everything" + (", PostgreSQL included." if embedded else "."))
    await serve_until_signal(server)


def _stop_database(embedded: EmbeddedPostgres) -> None:
    say("stopping the embedded PostgreSQL")
    embedded.stop()
    say("stopped")


def say(message: str) -> None:
    click.echo(message)
