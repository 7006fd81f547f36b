"""The REST API under ``/v1`` and the operational endpoints, wired onto an app by :func:`register`.

``opentier.gateway.app.create_app`` calls :func:`register`, which installs observability, the pool of
channels to the host (opened when the app starts serving, closed when it stops), the body size limits
and every blueprint: the resource routes here, and the identity routes (auth, users, keys).
"""

from __future__ import annotations

import importlib

from quart import Quart, request
from werkzeug.exceptions import RequestEntityTooLarge

from opentier.gateway import observability
from opentier.gateway.host import HostClient
from opentier.gateway.observability.grpc_tracing import tracing_interceptors
from opentier.gateway.routes import collections, conversations, documents, health, jobs, search
from opentier.gateway.routes.context import HOST_CLIENT_KEY
from opentier.gateway.state import gateway_state
from opentier.gateway.uploads import ENVELOPE_LIMIT

RESOURCE_BLUEPRINTS = (
    health.blueprint,
    collections.blueprint,
    documents.blueprint,
    jobs.blueprint,
    search.blueprint,
    conversations.blueprint,
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
#: Endpoints that read their body as a stream with a limit of their own.
STREAMED_BODY_ENDPOINTS = frozenset({"documents.upload_document"})


def register(app: Quart) -> None:
    """Install observability, the host client, the limits and all routes on ``app``."""
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

    _limit_bodies(app)
    for blueprint in RESOURCE_BLUEPRINTS:
        app.register_blueprint(blueprint)
    for name in IDENTITY_MODULES + STREAMING_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # not written yet: create_app registers it later
            raise
        for blueprint in module.blueprints():
            if blueprint.name not in app.blueprints:
                app.register_blueprint(blueprint)


def _limit_bodies(app: Quart) -> None:
    """Uploads may be as large as ``gateway.max_upload_bytes`` (checked while they stream); every other
    body at most ``gateway.max_json_bytes`` (checked on its declared length before it is read)."""
    gateway = gateway_state(app).settings.gateway
    app.config["MAX_CONTENT_LENGTH"] = max(gateway.max_upload_bytes + ENVELOPE_LIMIT, gateway.max_json_bytes)

    @app.before_request
    async def _json_limit() -> None:
        if request.endpoint in STREAMED_BODY_ENDPOINTS:
            return
        if request.content_length is not None and request.content_length > gateway.max_json_bytes:
            raise RequestEntityTooLarge(
                f"the request body is larger than {gateway.max_json_bytes} bytes (gateway.max_json_bytes)"
            )
