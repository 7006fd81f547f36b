"""Client interceptors of the host channels: a CLIENT span per call, and its trace context sent in the
call's metadata, so that the host's server span (``opentier.host.tracing``) joins the request's trace.

One interceptor per kind of call: unary-unary (the span ends with the answer), and unary-stream,
stream-unary and stream-stream (the span ends when the call is done, from the call's done callback:
the caller still has to read, or write, through the call once it is returned). Chat turns are
stream-stream calls (``ChatService/Chat``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from opentier.tracing import inject_metadata

#: The details grpc.aio gives a call that its own side cancelled (``grpc/aio/_call.py``).
LOCAL_CANCELLATION = "Locally cancelled by application!"


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
    details = ""
    try:
        code = await call.code()
        if code == grpc.StatusCode.CANCELLED:
            details = await call.details()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code == grpc.StatusCode.CANCELLED and details == LOCAL_CANCELLATION:
        # The gateway ended the call itself: a chat turn once its `done` arrived, or a client gone.
        span.set_attribute("opentier.cancelled_by_gateway", True)
    elif code != grpc.StatusCode.OK:
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


class _Streaming(_Tracing):
    async def _open(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], details: Any, request: Any
    ) -> Any:
        """Start the call with the span's context; the span ends once the call is done."""
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


class StreamTracingInterceptor(_Streaming, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """One request, streamed answers (``IngestService/Ingest``)."""

    async def intercept_unary_stream(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], details: Any, request: Any
    ) -> Any:
        return await self._open(continuation, details, request)


class StreamUnaryTracingInterceptor(_Streaming, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """Streamed requests, one answer (``IngestService/IngestStream``)."""

    async def intercept_stream_unary(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], details: Any, requests: Any
    ) -> Any:
        return await self._open(continuation, details, requests)


class StreamStreamTracingInterceptor(_Streaming, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Both ways streamed: a chat turn (``ChatService/Chat``), from ``start`` to ``done``."""

    async def intercept_stream_stream(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], details: Any, requests: Any
    ) -> Any:
        return await self._open(continuation, details, requests)


def tracing_interceptors(tracer: trace.Tracer) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors to give every host channel, one per kind of call."""
    return [
        UnaryTracingInterceptor(tracer),
        StreamTracingInterceptor(tracer),
        StreamUnaryTracingInterceptor(tracer),
        StreamStreamTracingInterceptor(tracer),
    ]
