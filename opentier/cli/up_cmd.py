"""``opentier up``: everything a single machine needs, in one command, stopped by one Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets

import click
from pydantic import SecretStr

from opentier.cli import CliState, pass_state
from opentier.cli.host_cmd import run, serve_until_signal
from opentier.config import Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.url import database_url, display_url
from opentier.gateway.app import create_app
from opentier.gateway.serve import GatewayServer
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.host.token import resolve_host_token, token_path
from opentier.plugin_manager import load_plugins

#: File in the data folder holding the generated token-signing secret of `opentier up`.
JWT_SECRET_FILE = "jwt.secret"


@click.command("up")
@pass_state
def command(state: CliState) -> None:
    """Start OpenTier on this machine and run until Ctrl-C or SIGTERM.

    \b
    1. PostgreSQL: the embedded server (data in database.embedded_dir, by
       default <data_dir>/postgres), or the server database.url names;
    2. the migrations of schema `gateway` and schema `intelligence`;
    3. the plugins, then the gRPC intelligence host on host.address:host.port,
       with its ingestion workers;
    4. the public HTTP gateway on gateway.address:gateway.port (REST API,
       OpenAPI at /openapi.json, docs at /docs), talking to that host.

    Ctrl-C or SIGTERM stops the gateway (requests in flight get
    gateway.shutdown_grace_seconds), the host (in-flight calls get
    host.grace_seconds, an ingestion batch in progress is rolled back and
    resumed at the next start), then the embedded PostgreSQL, so that nothing
    is left running. Running it again on the same data folder reuses the data.
    Without gateway.jwt_secret, a secret generated at the first run is kept in
    <data_dir>/jwt.secret, so that sign-ins survive a restart.
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
    gateway_settings = settings.model_copy(
        update={
            "gateway": settings.gateway.model_copy(
                update={"host_targets": [server.target], "jwt_secret": _jwt_secret(settings)}
            )
        }
    )
    try:
        gateway = GatewayServer(create_app(gateway_settings), gateway_settings)
    except BaseException:
        await server.stop()
        raise
    serving = asyncio.create_task(gateway.serve(), name="gateway")
    say(f"gateway: {gateway.url} (REST API under /v1, docs at {gateway.url}/docs)")
    say(f"OpenTier is up. Check it: curl {gateway.url}/readyz")
    say("Ctrl-C stops everything" + (", PostgreSQL included." if embedded else "."))
    try:
        await serve_until_signal(server, before_stop=gateway.request_stop)
    finally:
        gateway.request_stop()
        await serving


def _jwt_secret(settings: Settings) -> SecretStr:
    """``gateway.jwt_secret``, else one generated once and kept (0600) in the data folder."""
    if settings.gateway.jwt_secret is not None:
        return settings.gateway.jwt_secret
    path = settings.data_dir / JWT_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48))
        say(f"gateway: generated the token-signing secret {path}")
    return SecretStr(path.read_text(encoding="utf-8").strip())


def _stop_database(embedded: EmbeddedPostgres) -> None:
    say("stopping the embedded PostgreSQL")
    embedded.stop()
    say("stopped")


def say(message: str) -> None:
    click.echo(message)
