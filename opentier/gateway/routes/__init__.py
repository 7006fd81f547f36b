"""The REST API under ``/v1`` and the operational endpoints, wired onto an app by :func:`register`.

``opentier.gateway.app.create_app`` calls :func:`register`, which installs observability, the pool of
channels to the host (opened when the app starts serving, closed when it stops), the rate limits, the
token quotas (their ledger writer runs while the app serves and writes every pending charge before the
database closes), the body size limits and every blueprint: the resource routes here, the usage route,
and the identity routes (auth, users, keys). See docs/limits.md.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator

from quart import Quart

from opentier.gateway import observability
from opentier.gateway.host import HostClient
from opentier.gateway.limits import bodies, overrides, quotas, rates
from opentier.gateway.observability.grpc_tracing import tracing_interceptors
from opentier.gateway.routes import collections, conversations, documents, health, jobs, search, usage
from opentier.gateway.routes.context import HOST_CLIENT_KEY
from opentier.gateway.state import gateway_state

RESOURCE_BLUEPRINTS = (
    health.blueprint,
    collections.blueprint,
    documents.blueprint,
    jobs.blueprint,
    search.blueprint,
    conversations.blueprint,
    usage.blueprint,
)
IDENTITY_MODULES = (
    "opentier.gateway.routes.auth",
    "opentier.gateway.routes.users",
    "opentier.gateway.routes.keys",
)
#: Chat streaming: WebSocket, server-sent events, the OpenAI-compatible API (docs/streaming.md).
STREAMING_MODULES = (
    "opentier.gateway.routes.chat_ws",
    "opentier.gateway.routes.chat_sse",
    "opentier.gateway.routes.openai_compat",
)
#: The web chat page served at ``/`` (docs/web.md).
WEB_MODULES = ("opentier.gateway.routes.web",)
#: Admin operations, reports and the mail flows (docs/admin.md, docs/usage-reports.md, docs/email.md).
ADMIN_MODULES = (
    "opentier.gateway.routes.admin_usage",
    "opentier.gateway.routes.password_reset",
    "opentier.gateway.routes.admin_audit",
    "opentier.gateway.routes.admin_tenants",
    "opentier.gateway.routes.admin_keys",
    "opentier.gateway.routes.admin_limits",
    "opentier.gateway.routes.invitations",
    "opentier.gateway.routes.email_verification",
)


def register(app: Quart) -> None:
    """Install observability, the host client, the limits, the quotas and all routes on ``app``."""
    state = gateway_state(app)
    settings = state.settings
    seen = observability.install(app, settings)
    state.extras["observability"] = seen
    client = HostClient(settings, interceptors=tracing_interceptors(seen.tracer), observer=seen.metrics)
    state.extras[HOST_CLIENT_KEY] = client

    @app.before_serving
    async def _open_host() -> None:
        await client.open()

    @app.after_serving
    async def _close_host() -> None:
        await client.close(settings.gateway.shutdown_grace_seconds)

    bodies.install(app, settings.gateway)
    limit_overrides = overrides.LimitOverrides(settings.limits.overrides_cache_seconds, lambda: state.engine)
    state.extras[overrides.EXTRAS_KEY] = limit_overrides
    limits = rates.RateLimits(settings.limits, overrides=limit_overrides)
    state.extras[rates.EXTRAS_KEY] = limits
    rates.install(app, limits)
    token_quotas = quotas.TokenQuotas(settings.limits, overrides=limit_overrides)
    state.extras[quotas.EXTRAS_KEY] = token_quotas

    # While-serving, not before/after-serving: Quart runs it after every before_serving function (the
    # database is open) and ends it before any after_serving one (the database is still open), and
    # after the streams registered later (SSE) have ended their turns, so their charges are written.
    @app.while_serving
    async def _ledger() -> AsyncGenerator[None, None]:
        if state.engine is None:
            raise RuntimeError("the gateway's database engine must open before the token quotas")
        token_quotas.open(state.engine)
        yield
        await token_quotas.close(settings.gateway.shutdown_grace_seconds)

    for blueprint in RESOURCE_BLUEPRINTS:
        app.register_blueprint(blueprint)
    for name in IDENTITY_MODULES + STREAMING_MODULES + WEB_MODULES + ADMIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # not written yet: create_app registers it later
            raise
        for blueprint in module.blueprints():
            if blueprint.name not in app.blueprints:
                app.register_blueprint(blueprint)
