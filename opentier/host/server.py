"""The intelligence host: a grpc.aio server with token auth, error mapping and health.

Only implemented services are registered; calling any other method of the contract (every data
service on a server without a runtime) gets gRPC's own UNIMPLEMENTED, and the health service
answers NOT_FOUND (SERVICE_UNKNOWN) for it, so a gateway can tell a missing service from a broken
one. Each registered service, and ``""`` for the whole server, is SERVING once
:meth:`HostServer.start` returns and NOT_SERVING from the moment :meth:`HostServer.stop` begins.

The data services (collections, documents, ingestion, search, chat, conversations, tenant data) need the
database: they are registered when the server is given a :class:`~opentier.host.runtime.HostRuntime`,
which the server then starts before serving and stops after the last call ended.

Under overload, calls wait in the chat's admission queue (``chat.max_concurrent_turns``), not inside
gRPC: gRPC core cancels a call it received but the server has not taken up (requested) within
``grpc.server_max_unrequested_time_in_server`` (30 s by default), which happens when the event loop
is too busy to take up new calls. The host raises that limit to a turn's deadline, as a safety net.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from opentier.config import Settings
from opentier.engine.tenancy import TenantData
from opentier.errors import ConfigError, OpenTierError, PluginError
from opentier.generated.intelligence.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    conversations_pb2,
    conversations_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    plugins_pb2,
    plugins_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
)
from opentier.host.auth import TokenAuthInterceptor
from opentier.host.errors import ErrorMappingInterceptor
from opentier.host.runtime import HostRuntime
from opentier.host.servicers.chat import ChatServicer
from opentier.host.servicers.collections import CollectionServicer
from opentier.host.servicers.conversations import ConversationServicer
from opentier.host.servicers.documents import DocumentServicer
from opentier.host.servicers.ingest import IngestServicer
from opentier.host.servicers.plugins import PluginServicer
from opentier.host.servicers.search import SearchServicer
from opentier.host.servicers.tenants import TenantDataServicer
from opentier.host.tracing import ServerTracingInterceptor
from opentier.plugin_manager import PluginSystem

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def service_name(descriptor_file: Any, service: str) -> str:
    """Full gRPC name of ``service`` in a generated ``*_pb2`` module's file descriptor."""
    name: str = descriptor_file.services_by_name[service].full_name
    return name


def bind_address(address: str, port: int) -> str:
    """What grpc listens on: ``unix:/path`` as given, else ``host:port`` (IPv6 bracketed)."""
    if address.startswith("unix:"):
        return address
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"


def unrequested_call_limit(settings: Settings) -> int:
    """Seconds gRPC core keeps a received call that the server has not taken up yet before it cancels
    the call: gRPC's 30, or a chat turn's deadline when longer (a turn queued that long is refused
    by the chat's own admission anyway)."""
    return max(30, math.ceil(settings.chat.deadline_seconds))


def client_target(address: str, port: int) -> str:
    """The target a local client dials to reach a host listening on ``address:port``."""
    if address in {"0.0.0.0", ""}:
        address = "127.0.0.1"
    elif address in {"::", "[::]"}:
        address = "::1"
    return bind_address(address, port)


class HostServer:
    """One gRPC host: start it, wait on it, stop it (also usable as ``async with``)."""

    def __init__(
        self, settings: Settings, plugins: PluginSystem, token: str, runtime: HostRuntime | None = None
    ) -> None:
        if not token:
            raise ConfigError("the host token is empty; set OPENTIER_HOST__TOKEN or remove it")
        self.settings = settings
        self.plugins = plugins
        self.runtime = runtime
        self._token = token
        #: The port actually bound (differs from ``settings.host.port`` when that is 0).
        self.port: int = settings.host.port
        self.services: list[str] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._stopping = False

    @property
    def target(self) -> str:
        """Where a local client reaches this host (``127.0.0.1:50051``, ``unix:/path``)."""
        return client_target(self.settings.host.address, self.port)

    def _servicers(self) -> list[tuple[str, Callable[[grpc.aio.Server], None]]]:
        """(full service name, registration) of every implemented service."""
        plugin_servicer = PluginServicer(self.plugins)
        found: list[tuple[str, Callable[[grpc.aio.Server], None]]] = [
            (
                service_name(plugins_pb2.DESCRIPTOR, "PluginService"),
                lambda server: plugins_pb2_grpc.add_PluginServiceServicer_to_server(plugin_servicer, server),
            ),
        ]
        runtime = self.runtime
        if runtime is None:
            return found
        collections = CollectionServicer(runtime.collections)
        documents = DocumentServicer(runtime.documents)
        ingest = IngestServicer(runtime.ingestion)
        search = SearchServicer(runtime.search)
        chat = ChatServicer(runtime.chat)
        conversations = ConversationServicer(runtime.chat)
        tenants = TenantDataServicer(TenantData(runtime.db, runtime.ingestion))
        found += [
            (
                service_name(collections_pb2.DESCRIPTOR, "CollectionService"),
                lambda server: collections_pb2_grpc.add_CollectionServiceServicer_to_server(
                    collections, server
                ),
            ),
            (
                service_name(documents_pb2.DESCRIPTOR, "DocumentService"),
                lambda server: documents_pb2_grpc.add_DocumentServiceServicer_to_server(documents, server),
            ),
            (
                service_name(ingest_pb2.DESCRIPTOR, "IngestService"),
                lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server),
            ),
            (
                service_name(search_pb2.DESCRIPTOR, "SearchService"),
                lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(search, server),
            ),
            (
                service_name(chat_pb2.DESCRIPTOR, "ChatService"),
                lambda server: chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, server),
            ),
            (
                service_name(conversations_pb2.DESCRIPTOR, "ConversationService"),
                lambda server: conversations_pb2_grpc.add_ConversationServiceServicer_to_server(
                    conversations, server
                ),
            ),
            (
                service_name(tenants_pb2.DESCRIPTOR, "TenantData"),
                lambda server: tenants_pb2_grpc.add_TenantDataServicer_to_server(tenants, server),
            ),
        ]
        return found

    async def start(self) -> None:
        """Bind, run the plugins' startup hooks, start serving, then report SERVING."""
        if self._server is not None:
            raise RuntimeError("this HostServer was already started")
        host = self.settings.host
        server = grpc.aio.server(
            # Tracing outermost, so that refused and failed calls have their span too.
            interceptors=[
                ServerTracingInterceptor(),
                TokenAuthInterceptor(self._token),
                ErrorMappingInterceptor(),
            ],
            options=[
                ("grpc.max_send_message_length", host.max_message_bytes),
                ("grpc.max_receive_message_length", host.max_message_bytes),
                # A second host on the same port must fail to bind, not silently share it.
                ("grpc.so_reuseport", 0),
                ("grpc.server_max_unrequested_time_in_server", unrequested_call_limit(self.settings)),
            ],
        )
        health_servicer = health.aio.HealthServicer()
        await health_servicer.set("", NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        services = self._servicers()
        for _name, register in services:
            register(server)
        address = bind_address(host.address, host.port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as err:
            await server.stop(None)
            raise ConfigError(
                f"the host cannot listen on {address} (host.address, host.port): {err}"
            ) from None
        if port == 0 and not address.startswith("unix:"):
            await server.stop(None)
            raise ConfigError(f"the host cannot listen on {address} (host.address, host.port)")
        try:
            self.plugins.pm.hook.opentier_startup(settings=self.settings)
        except Exception as err:
            await server.stop(None)
            if isinstance(err, OpenTierError):
                raise
            raise PluginError(f"a plugin failed in opentier_startup: {type(err).__name__}: {err}") from err
        if self.runtime is not None:
            try:
                await self.runtime.start()
            except BaseException:
                await server.stop(None)
                await self.runtime.stop()
                self._shutdown_plugins()
                raise
        await server.start()
        self._server, self._health, self.port = server, health_servicer, port
        self.services = [name for name, _register in services]
        for name in ("", *self.services):
            await health_servicer.set(name, SERVING)
        log.info("host serving on %s: %s", self.target, ", ".join(self.services))

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within ``grace`` s, stop the runtime, run
        the shutdown hooks."""
        if self._server is None or self._health is None or self._stopping:
            return
        self._stopping = True
        grace = self.settings.host.grace_seconds if grace is None else grace
        log.info("host stopping (grace %.1fs)", grace)
        await self._health.enter_graceful_shutdown()
        try:
            await self._server.stop(grace)
        finally:
            try:
                if self.runtime is not None:
                    await self.runtime.stop()
            finally:
                self._shutdown_plugins()
        log.info("host stopped")

    def _shutdown_plugins(self) -> None:
        try:
            self.plugins.pm.hook.opentier_shutdown()
        except Exception:
            log.exception("a plugin failed in opentier_shutdown")

    async def wait(self) -> None:
        """Return when the server has terminated (after :meth:`stop`)."""
        if self._server is None:
            raise RuntimeError("the HostServer was not started")
        await self._server.wait_for_termination()

    async def __aenter__(self) -> HostServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
