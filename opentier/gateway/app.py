"""The gateway's Quart application: OpenAPI, errors, request ids, the database, then the routes.

``create_app(settings)`` builds a fresh app (no module-level app, so tests make as many as they need).
The database engine (schema ``gateway``) and the identity service open in ``before_serving`` and close
in ``after_serving``; Hypercorn and ``app.test_app()`` both run those.
"""

from __future__ import annotations

import importlib
import logging
import secrets
from types import ModuleType
from typing import Any

from quart import Quart
from quart_schema import HttpSecurityScheme, Info, OpenAPIProvider, QuartSchema
from quart_schema.openapi import APIKeySecurityScheme
from quart_schema.typing import Model
from werkzeug.routing import Rule

from opentier import __version__
from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.errors import ConfigError
from opentier.gateway import request_id
from opentier.gateway.errors import ErrorBody, NoContent, register_error_handlers
from opentier.gateway.identity.service import IdentityService
from opentier.gateway.limits.openapi import document_limits
from opentier.gateway.state import EXTENSION_KEY, GatewayState

log = logging.getLogger(__name__)

#: HS256 keys shorter than the hash output weaken the signature (RFC 7518, section 3.2).
MIN_JWT_SECRET_BYTES = 32
#: The identity routes; registered here unless ``opentier.gateway.routes.register`` already did.
IDENTITY_ROUTE_MODULES = (
    "opentier.gateway.routes.auth",
    "opentier.gateway.routes.users",
    "opentier.gateway.routes.keys",
)


class GatewayOpenAPI(OpenAPIProvider):
    """quart-schema's document, with :class:`NoContent` responses written as bodiless ones, and the media
    types a response model names in ``openapi_media_types`` (media type → JSON schema, ``None`` for the
    model's own) in place of ``application/json`` (e.g. ``text/event-stream``). Every operation lists the
    limits' answers, 429 and (with a body) 413 (:mod:`opentier.gateway.limits.openapi`)."""

    def build_response_object(
        self, model: type[Model], headers_model: type[Model] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content"}, {}
        built, components = super().build_response_object(model, headers_model)
        media_types = getattr(model, "openapi_media_types", None)
        if isinstance(media_types, dict):
            own = built["content"]["application/json"]
            built["content"] = {
                media: own if schema is None else {"schema": schema} for media, schema in media_types.items()
            }
        return built, components

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        error, error_components = super().build_response_object(ErrorBody, None)
        document_limits(paths, error)
        return paths, {**components, **error_components}


def create_app(settings: Settings) -> Quart:
    """A gateway app for ``settings``; refuses to build without a JWT secret outside development."""
    app = Quart("opentier.gateway")
    app.config["JSON_SORT_KEYS"] = False
    state = GatewayState(settings=settings, jwt_secret=resolve_jwt_secret(settings))
    app.extensions[EXTENSION_KEY] = state
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path="/redocs",
        scalar_ui_path=None,
        info=Info(title="OpenTier", version=__version__, description="The public OpenTier API."),
        security_schemes={
            "bearer": HttpSecurityScheme(scheme="bearer", bearer_format="JWT or otk_ API key"),
            "apiKey": APIKeySecurityScheme(in_="header", name="X-API-Key"),
        },
        openapi_provider_class=GatewayOpenAPI,
    )
    request_id.install(app)
    register_error_handlers(app)

    @app.before_serving
    async def _open() -> None:
        state.engine = create_engine(settings)
        state.identity = IdentityService(settings, state.engine, state.jwt_secret)

    @app.after_serving
    async def _close() -> None:
        state.identity = None
        if state.engine is not None:
            await state.engine.dispose()
            state.engine = None

    _register_routes(app)
    return app


def resolve_jwt_secret(settings: Settings) -> str:
    """``gateway.jwt_secret``; in development an ephemeral one (tokens die with the process)."""
    secret = settings.gateway.jwt_secret
    if secret is not None and len(secret.get_secret_value().encode()) >= MIN_JWT_SECRET_BYTES:
        return secret.get_secret_value()
    if settings.environment != "development":
        raise ConfigError(
            f"gateway.jwt_secret must be set to a random value of at least {MIN_JWT_SECRET_BYTES} bytes "
            "(environment variable OPENTIER_GATEWAY__JWT_SECRET) before the gateway starts"
        )
    if secret is not None:
        log.warning(
            "gateway.jwt_secret is shorter than %d bytes; using an ephemeral one instead (development)",
            MIN_JWT_SECRET_BYTES,
        )
    else:
        log.warning(
            "gateway.jwt_secret is not set; using an ephemeral one, so tokens stop working when the "
            "gateway restarts (set OPENTIER_GATEWAY__JWT_SECRET)"
        )
    return secrets.token_urlsafe(48)


def _register_routes(app: Quart) -> None:
    routes = _optional_module("opentier.gateway.routes")
    register = getattr(routes, "register", None)
    if callable(register):
        register(app)
    for name in IDENTITY_ROUTE_MODULES:
        module = _optional_module(name)
        if module is None:
            continue
        for blueprint in module.blueprints():
            if blueprint.name not in app.blueprints:
                app.register_blueprint(blueprint)


def _optional_module(name: str) -> ModuleType | None:
    """The module, or None while it does not exist yet (the routes are built alongside)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and name.startswith(err.name):
            return None
        raise
