"""ASGI middleware around the whole app: a SERVER span, the request metrics and one access-log line per
HTTP request.

It wraps the app from outside so that it sees every request, including those refused before any route
ran (401, 404, 413), and measures until the last byte of the response was handed to the server. The
route template is learnt from Quart after routing (:func:`remember_route`), through the ASGI scope.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from opentier.gateway.observability.metrics import UNMATCHED, GatewayMetrics

# Hypercorn's and Quart's precise ASGI types differ; the middleware only reads plain dict keys.
Scope = Any
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

#: Key of the ASGI scope under which the route template is left for the middleware.
ROUTE_KEY = "opentier.route"

access_log = logging.getLogger("opentier.gateway.access")


class ObservabilityMiddleware:
    """Span, metrics and access log for each HTTP request; WebSockets get a span only."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics | None, tracer: trace.Tracer) -> None:
        self._app = app
        self._metrics = metrics
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self._app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", ())
        }
        method = str(scope.get("method", "WS"))
        parent = propagate.extract(headers)
        span = self._tracer.start_span(
            f"{method} {UNMATCHED}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        )
        status = 500
        response_headers: dict[str, str] = {}
        started = time.perf_counter()

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_headers.update(
                    (key.decode("latin-1").lower(), value.decode("latin-1"))
                    for key, value in message.get("headers", ())
                )
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        if self._metrics is not None and scope["type"] == "http":
            self._metrics.in_flight.inc()
        try:
            await self._app(scope, receive, watching_send)
        finally:
            otel_context.detach(token)
            seconds = time.perf_counter() - started
            route = str(scope.get(ROUTE_KEY) or UNMATCHED)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            request_id = response_headers.get("x-request-id", "-")
            span.set_attribute("opentier.request_id", request_id)
            if scope["type"] == "http":
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                if self._metrics is not None:
                    self._metrics.in_flight.dec()
                    self._metrics.observe_request(method, route, status, seconds)
                access_log.info(
                    "%s %s %d %.1fms",
                    method,
                    scope.get("path", ""),
                    status,
                    seconds * 1000,
                    extra={
                        "http_method": method,
                        "route": route,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "request_id": request_id,
                    },
                )
            span.end()


def remember_route(scope: Scope, rule: str | None) -> None:
    """Record the matched route template for the middleware (called from a ``before_request`` hook)."""
    scope[ROUTE_KEY] = rule or UNMATCHED
