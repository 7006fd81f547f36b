"""OpenTelemetry glue shared by both processes: a tracer provider from settings, and the trace context
carried in gRPC metadata (W3C ``traceparent``), so a trace started at the gateway continues in the host.

Neither side imports the other: the gateway injects the context with :func:`inject_metadata`, the
host's server interceptor reads it with :func:`extract_metadata`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from opentier.errors import ConfigError

Exporter = Literal["none", "console", "otlp"]


def make_tracer_provider(exporter: Exporter, *, service_name: str, otlp_endpoint: str = "") -> TracerProvider:
    """A provider whose spans go nowhere, to standard output, or to an OTLP/HTTP collector.

    Even with ``none`` the spans are real (they have trace ids), so the context still propagates.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        if not otlp_endpoint:
            raise ConfigError("tracing is `otlp` but no OTLP endpoint is set (gateway.otlp_endpoint)")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    return provider


def inject_metadata(
    metadata: Iterable[tuple[str, Any]], context: otel_context.Context | None = None
) -> list[tuple[str, Any]]:
    """``metadata`` plus the trace context of ``context`` (default: the current one)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    kept = [(key, value) for key, value in metadata if key.lower() not in carrier]
    return kept + list(carrier.items())


def extract_metadata(metadata: Iterable[tuple[str, Any]]) -> otel_context.Context:
    """The trace context a caller sent in its gRPC metadata (empty when it sent none)."""
    carrier = {key.lower(): value for key, value in metadata if isinstance(value, str)}
    return propagate.extract(carrier)
