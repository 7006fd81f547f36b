"""``opentier host``: run the gRPC intelligence host, or probe its health."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
import grpc.aio
from opentelemetry import trace

from opentier.cli import CliState, pass_state
from opentier.config import Settings
from opentier.host.health import check_health
from opentier.host.runtime import HostRuntime, require_embedded_running
from opentier.host.server import HostServer, client_target
from opentier.host.token import resolve_host_token, token_path
from opentier.plugin_manager import PluginSystem, load_plugins
from opentier.tracing import make_tracer_provider

T = TypeVar("T")


@click.group("host")
def command() -> None:
    """The gRPC intelligence host: the non-public process that runs plugins.

    The gateway talks to it over gRPC with a shared token
    (OPENTIER_HOST__TOKEN, or <data_dir>/host.token created on first use).
    """


@command.command("serve")
@click.option("--address", help="Interface to listen on (overrides host.address).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (overrides host.port).",
)
@pass_state
def serve(state: CliState, address: str | None, port: int | None) -> None:
    """Load the plugins and serve gRPC until SIGINT (Ctrl-C) or SIGTERM.

    Needs the database running and migrated: the embedded one (`opentier db
    start`, `opentier db migrate`) or the server database.url names.
    `opentier up` does all of it in one command. The host also runs the
    ingestion workers (ingestion.workers).

    On a signal the host reports NOT_SERVING, lets in-flight calls finish
    for host.grace_seconds, stops the ingestion workers (a batch in progress
    is rolled back and resumed at the next start), runs the plugins' shutdown
    hooks and exits 0.
    """
    settings = state.settings
    overrides = {key: value for key, value in (("address", address), ("port", port)) if value is not None}
    if overrides:
        settings = settings.model_copy(update={"host": settings.host.model_copy(update=overrides)})
    require_embedded_running(settings)
    plugins = load_plugins(settings)
    for failure in plugins.failures:
        click.echo(f"warning: plugin {failure.name} did not load: {failure.error}", err=True)
    token = resolve_host_token(settings)
    install_host_tracing(settings)
    run(_serve(settings, plugins, token))


def install_host_tracing(settings: Settings) -> None:
    """Export the host's spans as the gateway's settings say (gateway.tracing, gateway.otlp_endpoint),
    so that a request traced at the gateway can be followed into this host."""
    provider = make_tracer_provider(
        settings.gateway.tracing, service_name="opentier-host", otlp_endpoint=settings.gateway.otlp_endpoint
    )
    trace.set_tracer_provider(provider)


async def _serve(settings: Settings, plugins: PluginSystem, token: str) -> None:
    server = HostServer(settings, plugins, token, runtime=HostRuntime(settings, plugins.registry))
    await server.start()
    source = "OPENTIER_HOST__TOKEN" if settings.host.token else str(token_path(settings))
    click.echo(
        f"opentier host serving on {server.target} "
        f"({len(plugins.loaded)} plugins; token from {source}); Ctrl-C stops it",
        err=True,
    )
    await serve_until_signal(server)
    click.echo("opentier host stopped", err=True)


async def serve_until_signal(server: HostServer, before_stop: Callable[[], object] | None = None) -> None:
    """Wait for SIGINT/SIGTERM (or the server ending by itself), then stop it gracefully.

    ``before_stop`` runs first (``opentier up`` stops its gateway before its host).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        terminated = asyncio.ensure_future(server.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({terminated, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if before_stop is not None:
            before_stop()
        click.echo("opentier host stopping", err=True)
        await server.stop()
        await terminated
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@command.command("health")
@click.option(
    "--target",
    metavar="HOST:PORT",
    help="Host to probe (default: host.address:host.port from the configuration).",
)
@click.option(
    "--service",
    default="",
    show_default="the whole server",
    help="Service to ask about, e.g. opentier.intelligence.v1.PluginService.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for an answer.",
)
@pass_state
def health(state: CliState, target: str | None, service: str, timeout: float) -> None:
    """Print the host's health status; exit 0 only when it is SERVING.

    Prints SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNREACHABLE (exit 1 for
    all but SERVING). Needs no token.
    """
    if target is None:
        host = state.settings.host
        target = client_target(host.address, host.port)
    try:
        status = run(check_health(target, timeout, service=service))
    except grpc.aio.AioRpcError as err:
        click.echo(f"error: health check failed: {err.code().name}: {err.details()}", err=True)
        sys.exit(1)
    click.echo(status)
    sys.exit(0 if status == "SERVING" else 1)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where available (the host's production loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(main)
    return uvloop.run(main)
