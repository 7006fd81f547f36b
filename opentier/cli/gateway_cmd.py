"""``opentier gateway``: run the public HTTP gateway (and, from the identity work, manage its admins)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import click

from opentier.cli import CliState, pass_state
from opentier.cli.gateway_admin_cmd import create_admin_command
from opentier.config import Settings


@click.group("gateway")
def command() -> None:
    """The public gateway: the REST API (and its OpenAPI document at /openapi.json).

    It authenticates callers, then reaches the intelligence host over gRPC with the
    host token (OPENTIER_HOST__TOKEN, or <data_dir>/host.token of a local host).
    """


@command.command("serve")
@click.option("--address", help="Interface to listen on (overrides gateway.address).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (overrides gateway.port).",
)
@pass_state
def serve(state: CliState, address: str | None, port: int | None) -> None:
    """Serve the gateway with Hypercorn (uvloop) until SIGINT (Ctrl-C) or SIGTERM.

    Needs the gateway's database migrated and, to answer API calls, a running
    host (`opentier host serve`, or `opentier up`); it starts without one and
    answers 503 until the host is reachable. On a signal it stops accepting
    connections, lets requests in flight finish for gateway.shutdown_grace_seconds,
    closes its channels to the host and exits 0.
    """
    settings = state.settings
    overrides = {key: value for key, value in (("address", address), ("port", port)) if value is not None}
    if overrides:
        settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update=overrides)})
    from opentier.gateway.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.gateway.log_format)
    run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from opentier.gateway.app import create_app
    from opentier.gateway.serve import GatewayServer

    server = GatewayServer(create_app(settings), settings)
    logging.getLogger("opentier.gateway").info(
        "gateway listening on %s (API docs at %s/docs); Ctrl-C stops it", server.url, server.url
    )
    await server.serve(handle_signals=True)


command.add_command(create_admin_command)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where available (the gateway's production loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # Windows
        asyncio.run(main)
        return
    uvloop.run(main)
