"""The gateway's only way to the intelligence host: a pool of gRPC channels with deadlines, the host
credential, the caller's identity, retries of idempotent calls, and errors mapped back.

Every call carries ``authorization: Bearer <host token>`` (the shared host credential, never a user's
password) and a :class:`Caller` filled from the authenticated principal, so the host scopes it by tenant.
A call gets one deadline for all its tries; when the host is down or silent the caller gets
:class:`~opentier.errors.HostUnavailableError` (503 with ``Retry-After``) within that deadline, and the
channels reconnect on their own once it is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opentier.config import Settings, env_name
from opentier.errors import ConfigError, HostUnavailableError, InvalidRequestError, OpenTierError
from opentier.gateway.host_errors import error_code, remote_error
from opentier.gateway.rpc import CHAT, DESCRIBE_TENANT_DATA, PURGE_TENANT_DATA, Method, Req, Resp
from opentier.generated.intelligence.v1 import chat_pb2, common_pb2, tenants_pb2

log = logging.getLogger(__name__)

#: File the local host writes its generated token to (``opentier.host.token.TOKEN_FILE_NAME``).
TOKEN_FILE_NAME = "host.token"
#: Cap on gRPC's reconnect backoff (default 120 s): a host that comes back is used within seconds.
MAX_RECONNECT_BACKOFF_MS = 2000
#: Room in a gRPC message beyond an upload's bytes (names, options, the caller).
MESSAGE_OVERHEAD_BYTES = 64 * 1024
#: Health status name when no answer came back.
UNREACHABLE = "UNREACHABLE"
#: Deadline of a tenant's purge: a large tenant's rows take long to delete (the call is not retried).
PURGE_DEADLINE_SECONDS = 600.0


class CallObserver(Protocol):
    """Told about each failed host call (the metrics count them by code)."""

    def host_call_failed(self, method: str, code: str) -> None: ...


def host_token(settings: Settings) -> str:
    """The host credential: ``host.token``, else the token file the local host created."""
    if settings.host.token is not None and settings.host.token.get_secret_value().strip():
        return settings.host.token.get_secret_value().strip()
    path = settings.data_dir.expanduser() / TOKEN_FILE_NAME
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no host credential: set {env_name('host.token')} to the host's token, or start the host "
            f"first with the same data folder (it creates {path})"
        ) from None
    except PermissionError:
        raise ConfigError(f"cannot read the host token {path}: run the gateway as the host's user") from None
    if not token:
        raise ConfigError(f"the host token file {path} is empty")
    return token


def host_targets(settings: Settings) -> list[str]:
    """The gRPC targets to call: ``gateway.host_targets``, else the local host's address and port."""
    if settings.gateway.host_targets:
        return list(settings.gateway.host_targets)
    address, port = settings.host.address, settings.host.port
    if address.startswith("unix:"):
        return [address]
    if address in {"0.0.0.0", ""}:
        address = "127.0.0.1"
    elif address in {"::", "[::]"}:
        address = "::1"
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return [f"{address}:{port}"]


class HostClient:
    """A round-robin pool of channels to the host(s); open it at start-up, close it at shutdown."""

    def __init__(
        self,
        settings: Settings,
        *,
        token: str | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        observer: CallObserver | None = None,
    ) -> None:
        gateway = settings.gateway
        if gateway.max_upload_bytes + MESSAGE_OVERHEAD_BYTES > settings.host.max_message_bytes:
            raise ConfigError(
                f"gateway.max_upload_bytes ({gateway.max_upload_bytes}) must stay below "
                f"host.max_message_bytes ({settings.host.max_message_bytes}) minus "
                f"{MESSAGE_OVERHEAD_BYTES} bytes: an upload travels to the host in one message"
            )
        self.settings = settings
        self.targets = host_targets(settings)
        self._token = token
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._interceptors = list(interceptors)
        self._observer = observer
        self._channels: list[tuple[str, grpc.aio.Channel]] = []
        self._cycle: itertools.cycle[tuple[str, grpc.aio.Channel]] | None = None
        self._callables: dict[tuple[int, str], Any] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the channels (they connect lazily: a host that is down does not stop the gateway)."""
        if self._channels:
            return
        limit = self.settings.host.max_message_bytes
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            # Each channel gets its own connection, else channels to one target share a subchannel.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.lb_policy_name", "round_robin"),
        ]
        for target in self.targets:
            for _ in range(self.settings.gateway.host_channels):
                channel = grpc.aio.insecure_channel(target, options=options, interceptors=self._interceptors)
                self._channels.append((target, channel))
        self._cycle = itertools.cycle(self._channels)
        try:
            self._credential()
        except HostUnavailableError as err:
            log.error("%s", err.message)
        log.info("host pool: %d channel(s) to %s", len(self._channels), ", ".join(self.targets))

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running get ``grace`` seconds to end."""
        channels, self._channels, self._cycle = self._channels, [], None
        self._callables.clear()
        await asyncio.gather(*(channel.close(grace) for _target, channel in channels))

    # -- calls ----------------------------------------------------------------------------------

    async def unary(
        self,
        method: Method[Req, Resp],
        request: Req,
        caller: common_pb2.Caller,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, not an asyncio timeout
    ) -> Resp:
        """Call ``method``; an idempotent one is tried again (backoff, jitter) while the host is
        unavailable, all tries within one deadline."""
        if method.server_streaming or method.client_streaming:
            raise TypeError(f"{method.label} streams: use stream() or chat()")
        _set_caller(request, caller)
        gateway = self.settings.gateway
        budget = gateway.host_deadline_seconds if timeout is None else timeout
        give_up_at = time.monotonic() + budget
        attempts = gateway.retry_attempts if method.idempotent else 1
        attempt = 0
        while True:
            attempt += 1
            remaining = give_up_at - time.monotonic()
            call = self._callable(method)
            try:
                response: Resp = await call(
                    request, metadata=self._credential(), timeout=max(remaining, 0.001)
                )
                return response
            except grpc.aio.AioRpcError as err:
                failure = err
            if failure.code() != grpc.StatusCode.UNAVAILABLE or attempt >= attempts:
                raise self._failed(method, failure) from None
            pause = random.uniform(
                0,
                min(
                    gateway.retry_max_backoff_seconds,
                    gateway.retry_initial_backoff_seconds * 2 ** (attempt - 1),
                ),
            )
            if time.monotonic() + pause >= give_up_at:
                raise self._failed(method, failure) from None
            log.info(
                "retrying %s in %.2fs (try %d of %d): host unavailable",
                method.label,
                pause,
                attempt + 1,
                attempts,
            )
            await asyncio.sleep(pause)

    async def stream(
        self,
        method: Method[Req, Resp],
        request: Req,
        caller: common_pb2.Caller,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncGenerator[Resp, None]:
        """The messages of a server-streaming call (never retried); leaving the loop early cancels it."""
        if not method.server_streaming or method.client_streaming:
            raise TypeError(f"{method.label} is not server-streaming only: use unary() or chat()")
        _set_caller(request, caller)
        deadline = self.settings.gateway.host_deadline_seconds if timeout is None else timeout
        call = self._callable(method)(request, metadata=self._credential(), timeout=deadline)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as err:
            raise self._failed(method, err) from None
        finally:
            call.cancel()

    async def chat(
        self,
        start: chat_pb2.ChatStart,
        caller: common_pb2.Caller,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> HostChat:
        """Open one chat turn on the host (``ChatService/Chat``, never retried) and send ``start``.

        Iterate the returned :class:`HostChat` for the host's events; ``timeout`` (default
        ``streaming.turn_deadline_seconds``) bounds the whole turn.
        """
        if not caller.tenant_id:
            raise InvalidRequestError("the caller has no tenant")
        deadline = self.settings.streaming.turn_deadline_seconds if timeout is None else timeout
        call = self._callable(CHAT)(metadata=self._credential(), timeout=deadline)
        chat = HostChat(self, call, caller)
        try:
            await chat.send(chat_pb2.ChatRequest(caller=caller, start=start))
        except BaseException:
            call.cancel()
            raise
        return chat

    async def tenant_data(self, tenant_id: str, request_id: str = "") -> tenants_pb2.TenantDataCounts:
        """What the host holds for ``tenant_id`` (for the operator: sent with the ``admin`` scope)."""
        return await self.unary(
            DESCRIBE_TENANT_DATA, tenants_pb2.TenantDataRequest(), _operator_caller(tenant_id, request_id)
        )

    async def purge_tenant_data(self, tenant_id: str, request_id: str = "") -> tenants_pb2.TenantDataCounts:
        """Delete everything the host holds for ``tenant_id``; what was deleted. Safe to repeat."""
        return await self.unary(
            PURGE_TENANT_DATA,
            tenants_pb2.TenantDataRequest(),
            _operator_caller(tenant_id, request_id),
            timeout=max(PURGE_DEADLINE_SECONDS, self.settings.gateway.host_deadline_seconds),
        )

    async def health(self, timeout: float) -> dict[str, str]:  # noqa: ASYNC109
        """Serving status (``SERVING``, ``NOT_SERVING``, ``UNREACHABLE``...) of each target, through the
        standard gRPC health service on the pool's own channels."""
        seen: dict[str, grpc.aio.Channel] = {}
        for target, channel in self._channels:
            seen.setdefault(target, channel)
        statuses = await asyncio.gather(*(_check(channel, timeout) for channel in seen.values()))
        return dict(zip(seen, statuses, strict=True))

    # -- internals ------------------------------------------------------------------------------

    def _credential(self) -> tuple[tuple[str, str], ...]:
        """The call metadata with the host credential, read on first need: the local host may start
        after the gateway and only then create its token file."""
        if self._metadata is None:
            try:
                token = self._token or host_token(self.settings)
            except ConfigError as err:
                raise HostUnavailableError(
                    f"the gateway has no credential for the host: {err.message}",
                    retry_after=self.settings.gateway.retry_after_seconds,
                ) from None
            self._metadata = (("authorization", f"Bearer {token}"),)
        return self._metadata

    def _next_channel(self) -> tuple[int, grpc.aio.Channel]:
        """The next channel in turn, skipping those whose connection is failing while another is not."""
        if self._cycle is None:
            raise HostUnavailableError(
                "the gateway is not connected to the host (not serving yet, or shutting down)",
                retry_after=self.settings.gateway.retry_after_seconds,
            )
        first: tuple[str, grpc.aio.Channel] | None = None
        for _ in range(len(self._channels)):
            candidate = next(self._cycle)
            first = first or candidate
            if candidate[1].get_state(try_to_connect=False) != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                first = candidate
                break
        assert first is not None
        return id(first[1]), first[1]

    def _callable(self, method: Method[Any, Any]) -> Any:
        key, channel = self._next_channel()
        found = self._callables.get((key, method.path))
        if found is None:
            if method.client_streaming:
                make = channel.stream_stream if method.server_streaming else channel.stream_unary
            else:
                make = channel.unary_stream if method.server_streaming else channel.unary_unary
            found = make(
                method.path,
                request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString,
            )
            self._callables[(key, method.path)] = found
        return found

    def _failed(self, method: Method[Any, Any], err: grpc.aio.AioRpcError) -> Exception:
        code = error_code(err) or err.code().name.lower()
        if self._observer is not None:
            self._observer.host_call_failed(method.label, code)
        return remote_error(err, method.label, retry_after=self.settings.gateway.retry_after_seconds)


class HostChat:
    """One open ``ChatService/Chat`` call (from :meth:`HostClient.chat`).

    Iterate it, once, for the host's :class:`ChatEvent` messages; a failed call raises the
    :class:`~opentier.errors.OpenTierError` it stands for. :meth:`cancel` asks the host to stop the
    turn (it still ends with ``usage`` and ``done``); :meth:`close`, or leaving the loop early, cancels
    the call itself, which also stops the host's LLM.
    """

    def __init__(self, client: HostClient, call: Any, caller: common_pb2.Caller) -> None:
        self._client = client
        self._call = call
        self._caller = caller
        self._cancel_sent = False
        self._writing = asyncio.Lock()

    def __aiter__(self) -> AsyncGenerator[chat_pb2.ChatEvent, None]:
        return self._events()

    async def _events(self) -> AsyncGenerator[chat_pb2.ChatEvent, None]:
        try:
            async for message in self._call:
                yield message
        except grpc.aio.AioRpcError as err:
            raise self._client._failed(CHAT, err) from None
        finally:
            self._call.cancel()

    async def send(self, request: chat_pb2.ChatRequest) -> None:
        """Write one message of the call; a call that already failed raises its error."""
        async with self._writing:
            try:
                await self._call.write(request)
            except grpc.aio.AioRpcError as err:
                raise self._client._failed(CHAT, err) from None
            except asyncio.InvalidStateError:
                # The call ended before the message went out (an intercepted call says so this way
                # rather than with its error): its status says why.
                code = await self._call.code()
                if code == grpc.StatusCode.OK:
                    raise
                ended = grpc.aio.AioRpcError(
                    code,
                    await self._call.initial_metadata(),
                    await self._call.trailing_metadata(),
                    await self._call.details(),
                )
                raise self._client._failed(CHAT, ended) from None

    async def cancel(self, reason: str) -> bool:
        """Send ``ChatCancel`` once; False when the call is over already (nothing to stop)."""
        if self._cancel_sent or self._call.done():
            return False
        self._cancel_sent = True
        request = chat_pb2.ChatRequest(caller=self._caller, cancel=chat_pb2.ChatCancel(reason=reason))
        try:
            await self.send(request)
        except (OpenTierError, asyncio.InvalidStateError) as err:
            log.debug("chat cancel not sent, the call is over: %s", err)
            return False
        return True

    def close(self) -> None:
        """Cancel the call (a no-op once it ended)."""
        self._call.cancel()

    def done(self) -> bool:
        return bool(self._call.done())


def _operator_caller(tenant_id: str, request_id: str) -> common_pb2.Caller:
    """The caller of a tenant data call: the target tenant itself, with the ``admin`` scope."""
    return common_pb2.Caller(tenant_id=tenant_id, scopes=["admin"], request_id=request_id)


def _set_caller(request: Message, caller: common_pb2.Caller) -> None:
    if not caller.tenant_id:
        raise InvalidRequestError("the caller has no tenant")
    field = getattr(request, "caller", None)
    if not isinstance(field, common_pb2.Caller):
        raise TypeError(f"{type(request).__name__} has no caller field")
    field.CopyFrom(caller)


async def _check(channel: grpc.aio.Channel, timeout: float) -> str:  # noqa: ASYNC109
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError as err:
        if err.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}:
            return UNREACHABLE
        failed: str = err.code().name
        return failed
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
