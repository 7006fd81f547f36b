"""PluginService: what this host loaded, for ``opentier plugins``-style listings remotely."""

from __future__ import annotations

from collections import defaultdict

import grpc.aio

from opentier.generated.intelligence.v1 import plugins_pb2, plugins_pb2_grpc
from opentier.plugin_manager import PluginSystem


class PluginServicer(plugins_pb2_grpc.PluginServiceServicer):
    """Reads the host's :class:`PluginSystem`; it is fixed once the host started, so no locking."""

    def __init__(self, plugins: PluginSystem) -> None:
        self._plugins = plugins

    async def ListPlugins(
        self, request: plugins_pb2.ListPluginsRequest, context: grpc.aio.ServicerContext
    ) -> plugins_pb2.ListPluginsResponse:
        return list_plugins_response(self._plugins)


def list_plugins_response(plugins: PluginSystem) -> plugins_pb2.ListPluginsResponse:
    """The loaded plugins with their components, and the failures, ordered by name."""
    components: dict[str, list[plugins_pb2.Component]] = defaultdict(list)
    for kind, name, owner in plugins.registry.registrations():
        description = plugins.registry.get(kind, name).description
        components[owner].append(plugins_pb2.Component(kind=str(kind), name=name, description=description))
    return plugins_pb2.ListPluginsResponse(
        plugins=[
            plugins_pb2.Plugin(
                name=info.name,
                distribution=info.distribution or "",
                version=info.version or "",
                module=info.module,
                components=components.get(info.name, []),
            )
            for info in sorted(plugins.loaded, key=lambda info: info.name)
        ],
        failures=[
            plugins_pb2.PluginFailure(
                name=failure.name,
                distribution=failure.distribution or "",
                version=failure.version or "",
                error=failure.error,
            )
            for failure in sorted(plugins.failures, key=lambda failure: failure.name)
        ],
    )
