"""The host's only gate: every call must carry ``authorization: Bearer <host token>``.

The health service stays open so probes (load balancers, ``opentier host health``) need no
secret; it reveals nothing but serving status.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from opentier.config import env_name
from opentier.errors import AuthenticationError
from opentier.host.errors import ERROR_CODE_KEY

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "bearer "
#: Methods callable without the token.
PUBLIC_METHOD_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that authenticates a client to the host."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses, with UNAUTHENTICATED, every non-public call lacking the right bearer token."""

    def __init__(self, token: str, *, public_prefixes: tuple[str, ...] = PUBLIC_METHOD_PREFIXES) -> None:
        if not token:
            raise ValueError("the host token must not be empty")
        self._token = token.encode("utf-8")
        self._public_prefixes = public_prefixes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method.startswith(self._public_prefixes):
            return await continuation(handler_call_details)
        problem = self.problem(handler_call_details.invocation_metadata or ())
        handler = await continuation(handler_call_details)
        if problem is None:
            return handler
        return _refusal(handler, problem)

    def problem(self, metadata: Iterable[tuple[str, Any]]) -> str | None:
        """Why ``metadata`` does not authenticate the call, or ``None`` when it does."""
        values = [value for key, value in metadata if key.lower() == AUTHORIZATION_KEY]
        if not values:
            return (
                f"missing credential: send metadata '{AUTHORIZATION_KEY}: Bearer <host token>' "
                f"(the token is {env_name('host.token')} or <data_dir>/host.token)"
            )
        if len(values) > 1:
            return f"send exactly one '{AUTHORIZATION_KEY}' metadata entry, not {len(values)}"
        value = values[0]
        if not isinstance(value, str) or not value.lower().startswith(BEARER_PREFIX):
            return f"the '{AUTHORIZATION_KEY}' metadata must have the form 'Bearer <host token>'"
        given = value[len(BEARER_PREFIX) :].strip().encode("utf-8")
        if not hmac.compare_digest(given, self._token):
            return "the host token is not valid"
        return None


def _refusal(handler: grpc.RpcMethodHandler | None, problem: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape that only aborts, without reading the request."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            problem,
            trailing_metadata=((ERROR_CODE_KEY, AuthenticationError.code),),
        )

    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse)
