"""OpenTier errors → gRPC status codes, applied to every call by one server interceptor.

An :class:`~opentier.errors.OpenTierError` ends the call with its ``grpc_status``, its message,
and the trailing metadata ``opentier-error-code: <code>``. Any other exception is logged with its
traceback and becomes INTERNAL with a generic message, so no servicer leaks internals to the caller;
except the database pool's timeout, which says the host is overloaded, not broken: it becomes
``host_busy`` (UNAVAILABLE, retryable); and PostgreSQL unreachable or text it cannot store, which become
``database_error`` (UNAVAILABLE) and ``invalid_request`` (:mod:`opentier.db.faults`). Servicers
therefore just raise; they need no decorator.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
import grpc.aio

from opentier.db.faults import database_fault
from opentier.engine.chat.admission import pool_busy
from opentier.errors import OpenTierError
from opentier.generated.intelligence.v1 import common_pb2

#: Trailing metadata key holding the stable error code (``opentier.errors.OpenTierError.code``).
ERROR_CODE_KEY = "opentier-error-code"
INTERNAL_CODE = OpenTierError.code
RETRYABLE_STATUSES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

log = logging.getLogger(__name__)

Behavior = Callable[[Any, Any], Any]


def grpc_status_of(err: OpenTierError) -> grpc.StatusCode:
    """The status code named by the error class's ``grpc_status``."""
    status = getattr(grpc.StatusCode, err.grpc_status, None)
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.INTERNAL


def error_info(err: BaseException) -> common_pb2.ErrorInfo:
    """The :class:`ErrorInfo` a stream sends for ``err`` (generic for unexpected exceptions)."""
    if isinstance(err, OpenTierError):
        return common_pb2.ErrorInfo(
            code=err.code,
            message=err.message,
            retryable=grpc_status_of(err) in RETRYABLE_STATUSES,
        )
    return common_pb2.ErrorInfo(code=INTERNAL_CODE, message=internal_message(None), retryable=False)


def internal_message(request_id: str | None) -> str:
    """What the caller learns about an unexpected failure: where to look, nothing more."""
    ref = f" (request id {request_id})" if request_id else ""
    return f"internal error in the OpenTier host{ref}; the host log has the details"


async def abort_with(context: grpc.aio.ServicerContext, err: OpenTierError) -> NoReturn:
    """End the call with ``err``'s status, message and ``opentier-error-code`` trailer."""
    await context.abort(grpc_status_of(err), err.message, trailing_metadata=((ERROR_CODE_KEY, err.code),))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def _fail(err: BaseException, context: grpc.aio.ServicerContext, method: str, request: Any) -> NoReturn:
    if isinstance(err, grpc.aio.AbortError | asyncio.CancelledError) or not isinstance(err, Exception):
        raise err
    err = pool_busy(err) or database_fault(err) or err
    if isinstance(err, OpenTierError):
        log.info("%s failed: [%s] %s", method, err.code, err.message)
        await abort_with(context, err)
    request_id = _request_id(request)
    log.error("unexpected error in %s (request id %s)", method, request_id or "-", exc_info=err)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        internal_message(request_id),
        trailing_metadata=((ERROR_CODE_KEY, INTERNAL_CODE),),
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


def _request_id(request: Any) -> str | None:
    caller = getattr(request, "caller", None)
    request_id = getattr(caller, "request_id", None)
    return request_id if isinstance(request_id, str) and request_id else None


def _wrap_call(behavior: Behavior, method: str) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except BaseException as err:
            await _fail(err, context, method, request)

    return call


def _wrap_stream(behavior: Behavior, method: str) -> Callable[[Any, Any], Any]:
    if not inspect.isasyncgenfunction(behavior):
        return _wrap_call(behavior, method)  # a coroutine that writes through context.write

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as err:
            await _fail(err, context, method, request)

    return stream


def wrap_handler(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler with its behavior wrapped in the error mapping."""
    serde = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_wrap_call(handler.unary_unary, method), **serde)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method), **serde)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_wrap_call(handler.stream_unary, method), **serde)
    return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, method), **serde)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies the error mapping to every method of every service on the server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, handler_call_details.method)
