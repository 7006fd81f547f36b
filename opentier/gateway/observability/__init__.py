"""Metrics, traces and logs of the gateway, installed on an app by :func:`install`.

- Prometheus metrics at ``/metrics`` (``gateway.metrics``), in a registry of the app's own;
- an OpenTelemetry SERVER span per request, continued into the host through the gRPC metadata;
- one access-log line per request; :func:`~opentier.gateway.observability.logs.configure_logging`
  makes every log line JSON with its request id (``opentier gateway serve`` calls it).
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from quart import Quart, Response, request, websocket
from quart_schema import hide

from opentier.config import Settings
from opentier.gateway.observability.metrics import CONTENT_TYPE, GatewayMetrics
from opentier.gateway.observability.middleware import ObservabilityMiddleware, remember_route
from opentier.tracing import make_tracer_provider

SERVICE_NAME = "opentier-gateway"
TRACER_NAME = "opentier.gateway"


@dataclass
class Observability:
    """What :func:`install` set up on one app."""

    metrics: GatewayMetrics | None
    tracer_provider: TracerProvider

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer(TRACER_NAME)


def install(app: Quart, settings: Settings) -> Observability:
    """Wrap ``app`` in the observability middleware and serve ``/metrics``."""
    gateway = settings.gateway
    provider = make_tracer_provider(
        gateway.tracing, service_name=SERVICE_NAME, otlp_endpoint=gateway.otlp_endpoint
    )
    metrics = GatewayMetrics() if gateway.metrics else None
    found = Observability(metrics=metrics, tracer_provider=provider)
    app.asgi_app = ObservabilityMiddleware(app.asgi_app, metrics, found.tracer)  # type: ignore[method-assign]

    @app.before_request
    async def _route() -> None:
        remember_route(request.scope, request.url_rule.rule if request.url_rule else None)

    @app.before_websocket
    async def _websocket_route() -> None:
        remember_route(websocket.scope, websocket.url_rule.rule if websocket.url_rule else None)

    if metrics is not None:

        @app.get("/metrics")
        @hide
        async def metrics_endpoint() -> Response:
            return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.after_serving
    async def _flush_spans() -> None:
        provider.shutdown()

    return found
