"""Client interceptors of the host channels: a CLIENT span per call, and its trace context sent in the
call's metadata, so that the host's server span (``opentier.host.tracing``) joins the request's trace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from opentier.tracing import inject_metadata


def _details_with_context(
    details: grpc.aio.ClientCallDetails, span: trace.Span
) -> grpc.aio.ClientCallDetails:
    metadata = inject_metadata(tuple(details.metadata or ()), trace.set_span_in_context(span))
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


def _method(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return (method.decode() if isinstance(method, bytes) else str(method)).strip("/")


class _Tracing:
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        # Span-ending tasks of finished streams, kept until they ran (asyncio holds only weak refs).
        self._pending: set[asyncio.Task[None]] = set()

    def _start(self, details: grpc.aio.ClientCallDetails) -> trace.Span:
        method = _method(details)
        service, _, name = method.partition("/")
        return self._tracer.start_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )


async def _end(span: trace.Span, call: Any) -> None:
    try:
        code = await call.code()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(trace.StatusCode.ERROR, code.name)
    span.end()


class UnaryTracingInterceptor(_Tracing, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], details: Any, request: Any
    ) -> Any:
        span = self._start(details)
        try:
            call = await continuation(_details_with_context(details, span), request)
        except BaseException:
            span.set_status(trace.StatusCode.ERROR)
            span.end()
            raise
        await _end(span, call)
        return call


class StreamTracingInterceptor(_Tracing, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], details: Any, request: Any
    ) -> Any:
        span = self._start(details)
        try:
            call = await continuation(_details_with_context(details, span), request)
        except BaseException:
            span.set_status(trace.StatusCode.ERROR)
            span.end()
            raise

        def finished(done: Any) -> None:
            task = asyncio.ensure_future(_end(span, done))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(finished)
        return call


def tracing_interceptors(tracer: trace.Tracer) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors to give every host channel."""
    return [UnaryTracingInterceptor(tracer), StreamTracingInterceptor(tracer)]
