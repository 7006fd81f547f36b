"""A server span for every host call, child of the caller's trace when it sent one (``traceparent``).

The gateway puts its trace context in each call's metadata; this interceptor continues that trace, so a
request can be followed from the public API into the host. Spans go to the process's global tracer
provider (a no-op one unless the host configured an exporter).

A streaming handler's span is made current only while the handler runs, step by step, never across
a ``yield``: gRPC may close the stream (``GeneratorExit``) from another task, whose context could not
detach what this one attached.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import trace

from opentier.tracing import extract_metadata

TRACER_NAME = "opentier.host"

Behavior = Callable[[Any, Any], Any]


class ServerTracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs each call's handler inside a SERVER span named after the method."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        parent = extract_metadata(handler_call_details.invocation_metadata or ())
        serde = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_call(handler.unary_unary, method, parent), **serde)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream, method, parent), **serde
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_call(handler.stream_unary, method, parent), **serde)
        return grpc.stream_stream_rpc_method_handler(_stream(handler.stream_stream, method, parent), **serde)


def _start(method: str, parent: Any) -> trace.Span:
    service, _, name = method.strip("/").partition("/")
    return trace.get_tracer(TRACER_NAME).start_span(
        method.strip("/"),
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


def _finish(span: trace.Span, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
    if error is not None or (isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK):
        span.set_status(
            trace.StatusCode.ERROR, context.details() or (type(error).__name__ if error else None)
        )
    span.end()


def _call(behavior: Behavior, method: str, parent: Any) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        span = _start(method, parent)
        error: BaseException | None = None
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
        except BaseException as err:
            error = err
            raise
        finally:
            _finish(span, context, error)

    return call


def _stream(behavior: Behavior, method: str, parent: Any) -> Callable[[Any, Any], Any]:
    if not inspect.isasyncgenfunction(behavior):
        return _call(behavior, method, parent)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        span = _start(method, parent)
        current = trace.set_span_in_context(span)
        error: BaseException | None = None
        responses: AsyncIterator[Any] = behavior(request, context)
        try:
            while True:
                token = otel_context.attach(current)
                try:
                    response = await anext(responses)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                yield response
        except BaseException as err:
            error = err
            raise
        finally:
            try:
                token = otel_context.attach(current)
                try:
                    await _close(responses)
                finally:
                    otel_context.detach(token)
            finally:
                _finish(span, context, error)

    return stream


async def _close(responses: AsyncIterator[Any]) -> None:
    """Close the handler's generator here, in this task's context (a no-op once it ended)."""
    close = getattr(responses, "aclose", None)
    if close is not None:
        await close()
