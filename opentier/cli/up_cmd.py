"""``opentier up``: everything a single machine needs, in one command, stopped by one Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TypeVar

import click
import httpx

from opentier.cli import CliState, pass_state
from opentier.config import Settings, env_name, find_config_file
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.url import database_url, display_url
from opentier.demo import DEMO_COLLECTION, SAMPLE_QUESTION, ingest_demo
from opentier.errors import OpenTierError
from opentier.firstrun import (
    ADMIN_EMAIL_ENV,
    ADMIN_PASSWORD_ENV,
    DEFAULT_ADMIN_EMAIL,
    Admin,
    check_environment,
    ensure_admin,
)
from opentier.host.health import check_health
from opentier.host.server import client_target
from opentier.host.token import resolve_host_token, token_path
from opentier.supervisor import ChildSpec, Probe, Supervisor

T = TypeVar("T")

#: File in the data folder holding the generated token-signing secret of `opentier up`.
JWT_SECRET_FILE = "jwt.secret"
#: How long the host (plugins loading) and the gateway may take to become ready at the first start.
HOST_READY_SECONDS = 180.0
GATEWAY_READY_SECONDS = 60.0
#: Seconds a child gets beyond its own grace period to exit after SIGTERM, before SIGKILL.
STOP_MARGIN_SECONDS = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@click.command("up")
@click.option(
    "--demo",
    is_flag=True,
    help=f"Ingest a few bundled pages about OpenTier into collection {DEMO_COLLECTION!r} of the "
    "default tenant (unchanged pages are skipped on later runs).",
)
@pass_state
def command(state: CliState, demo: bool) -> None:
    """Start OpenTier on this machine and run until Ctrl-C or SIGTERM.

    \b
    1. PostgreSQL: the embedded server (data in database.embedded_dir, by
       default <data_dir>/postgres), or the server database.url names;
    2. the migrations of schema `gateway` and schema `intelligence`;
    3. the gRPC intelligence host (`opentier host serve`) on
       host.address:host.port, as a child process; once it answers SERVING,
    4. the public HTTP gateway (`opentier gateway serve`) on
       gateway.address:gateway.port, as a child process talking to that host;
       once its /readyz answers, its URL is printed (web page at /, REST API
       under /v1, OpenAPI at /openapi.json, docs at /docs).
    A port set to 0 is picked once, and kept when a child is restarted.

    \b
    First run: when the default tenant (auth.default_tenant) has no admin,
    an admin user and an API key (scopes read, ingest, chat, admin) are
    created and printed ONCE; only hashes are stored. The email is
    $OPENTIER_ADMIN_EMAIL (default admin@example.com), the password
    $OPENTIER_ADMIN_PASSWORD or, unset, a generated one. Later runs print
    only that the admin exists.

    \b
    Supervision: a child that exits is restarted after 0.5 s, doubled per
    failure up to 30 s; the exit code or signal is printed. After 5 exits
    within 60 s of one child, everything is stopped and the command exits
    with status 2. Child output is copied to standard error, prefixed with
    `host |` or `gateway |`.

    \b
    Ctrl-C (SIGINT) or SIGTERM stops the gateway (streams are closed, requests
    in flight get gateway.shutdown_grace_seconds), then the host (calls get
    host.grace_seconds; an ingestion batch in progress is rolled back and
    resumed at the next start), then the embedded PostgreSQL: nothing is left
    running. A second Ctrl-C kills the children instead of waiting.

    \b
    Running it again on the same data folder reuses everything: the data, the
    admin, unfinished ingestion jobs. Without gateway.jwt_secret, a secret
    generated at the first run is kept in <data_dir>/jwt.secret (mode 0600),
    so that sign-ins survive a restart. More in docs/operations.md.
    """
    settings = state.settings
    check_environment(settings, os.environ)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness probe
    config_file = find_config_file(state.config_file)
    asyncio.run(_main(settings, config_file.resolve() if config_file else None, demo))


async def _main(settings: Settings, config_file: Path | None, demo: bool) -> None:
    """Run :func:`_up`; the first stop signal cancels it (so it cleans up), the next ones hurry it."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    supervisor = Supervisor(log=say)
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if len(received) == 1:
            say(f"{signum.name}: stopping OpenTier (again to stop faster)")
            main.cancel()
        else:
            say(f"{signum.name}: stopping faster, the host and the gateway are killed")
            supervisor.hurry.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await _up(settings, config_file, demo, supervisor)
    except asyncio.CancelledError:
        if not received:
            raise
        say("OpenTier stopped")
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _up(settings: Settings, config_file: Path | None, demo: bool, supervisor: Supervisor) -> None:
    embedded = None if settings.database.url else EmbeddedPostgres.from_settings(settings)
    try:
        if embedded is not None:
            say(f"starting the embedded PostgreSQL in {embedded.data_dir}")
            await _to_the_end(asyncio.to_thread(embedded.start))
        say(f"database: {display_url(database_url(settings))}")
        revisions = await _to_the_end(migrate(settings))
        say("migrations: " + ", ".join(f"{side} at {rev}" for side, rev in revisions.items()))
        try:
            await _serve(settings, config_file, demo, supervisor)
        finally:
            await supervisor.stop()
    finally:
        if embedded is not None:
            say("stopping the embedded PostgreSQL")
            await asyncio.to_thread(embedded.stop)
            say("stopped")


async def _serve(settings: Settings, config_file: Path | None, demo: bool, supervisor: Supervisor) -> None:
    """Start the host, then the gateway; create the first admin, the demo; supervise until cancelled."""
    host_port = _port(settings.host.address, settings.host.port)
    gateway_port = _port(settings.gateway.address, settings.gateway.port)
    settings = settings.model_copy(
        update={
            "host": settings.host.model_copy(update={"port": host_port}),
            "gateway": settings.gateway.model_copy(update={"port": gateway_port}),
        }
    )
    target = client_target(settings.host.address, host_port)
    url = "http://" + client_target(settings.gateway.address, gateway_port)
    resolve_host_token(settings)  # made before either child reads it
    command = [sys.executable, "-m", "opentier.cli"]
    if config_file is not None:
        command += ["--config", str(config_file)]
    env = _child_environment(os.environ)

    await supervisor.start(
        ChildSpec(
            "host",
            [*command, "host", "serve", "--port", str(host_port)],
            ready=_host_serving(target),
            env=env,
            ready_timeout=HOST_READY_SECONDS,
            stop_timeout=settings.host.grace_seconds + STOP_MARGIN_SECONDS,
        )
    )
    source = env_name("host.token") if settings.host.token else str(token_path(settings))
    say(f"host: {target} (gRPC; token from {source})")

    gateway_env = {
        **env,
        env_name("gateway.host_targets"): json.dumps([target]),
        env_name("gateway.jwt_secret"): _jwt_secret(settings),
    }
    if "log_format" not in settings.gateway.model_fields_set:
        gateway_env[env_name("gateway.log_format")] = "text"  # JSON lines are for log collectors
    async with httpx.AsyncClient(timeout=settings.gateway.readiness_timeout_seconds + 1) as http:
        await supervisor.start(
            ChildSpec(
                "gateway",
                [*command, "gateway", "serve", "--port", str(gateway_port)],
                ready=_gateway_ready(http, url),
                env=gateway_env,
                ready_timeout=GATEWAY_READY_SECONDS,
                stop_timeout=settings.gateway.shutdown_grace_seconds + STOP_MARGIN_SECONDS,
            )
        )
        say(f"gateway: {url} (web page at /, REST API under /v1, docs at {url}/docs)")
        admin = await _to_the_end(ensure_admin(settings, os.environ))
        _show_admin(admin)
        if demo:
            await _demo(settings, admin)
        say(f"OpenTier is up: {url}")
        say("Ctrl-C stops everything" + (", PostgreSQL included." if not settings.database.url else "."))
        await supervisor.wait()


def _show_admin(admin: Admin) -> None:
    if not admin.created:
        say(f"admin: {admin.email} of tenant {admin.tenant!r} exists")
        return
    say(f"first run: created the admin of tenant {admin.tenant!r} and an API key, shown this once:")
    say(f"  email:    {admin.email}")
    say(f"  password: {admin.password or f'(from {ADMIN_PASSWORD_ENV})'}")
    say(f"  API key:  {admin.api_key}")
    say(
        f"  Sign in with the email and password; the key (scopes {', '.join(admin.api_key_scopes)}) goes "
        "in `Authorization: Bearer <key>`. Neither is stored: keep them now."
    )
    if admin.email == DEFAULT_ADMIN_EMAIL:
        say(f"  (set {ADMIN_EMAIL_ENV} and {ADMIN_PASSWORD_ENV} before the first run to choose them)")


async def _demo(settings: Settings, admin: Admin) -> None:
    say(f"demo: ingesting the sample pages into collection {DEMO_COLLECTION!r}")
    try:
        result = await ingest_demo(settings, tenant_id=admin.tenant_id, user_id=admin.user_id)
    except OpenTierError as err:
        say(f"warning: the demo was not ingested: {err.message}")
        return
    new = result.created + result.updated
    say(
        f"demo: collection {DEMO_COLLECTION!r} (id {result.collection_id}) holds {result.documents} pages "
        f"({new} new, {result.unchanged} unchanged, {result.failed} failed); "
        f"ask it e.g. {SAMPLE_QUESTION!r}"
    )


def _child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: this one without the first admin's credentials."""
    return {k: v for k, v in environ.items() if k not in {ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV}}


def _port(address: str, port: int) -> int:
    """``port``, or when 0 a free one, picked once so that a restarted child gets the same."""
    if port or address.startswith("unix:"):
        return port
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address.strip("[]"), 0))
        picked: int = probe.getsockname()[1]
        return picked


def _host_serving(target: str) -> Probe:
    async def probe() -> bool:
        return await check_health(target, 1.0) == "SERVING"

    return probe


def _gateway_ready(http: httpx.AsyncClient, url: str) -> Probe:
    async def probe() -> bool:
        return (await http.get(f"{url}/readyz")).status_code == 200

    return probe


async def _to_the_end(step: Awaitable[T]) -> T:
    """Await ``step``; when cancelled meanwhile, let it finish first (a database half started or half
    migrated is not left behind), then pass the cancellation on."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            say(f"while stopping: {task.exception()}")
        raise


def _jwt_secret(settings: Settings) -> str:
    """``gateway.jwt_secret``, else one generated once and kept (0600) in the data folder."""
    if settings.gateway.jwt_secret is not None:
        return settings.gateway.jwt_secret.get_secret_value()
    path = settings.data_dir / JWT_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(48))
        say(f"gateway: generated the token-signing secret {path}")
    return path.read_text(encoding="utf-8").strip()


def say(message: str) -> None:
    click.echo(message)
