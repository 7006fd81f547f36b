"""The real gRPC host on port 0 with its runtime (real PostgreSQL, the test embedder), and stubs.

``host`` serves in this process; tests talk to it through the generated stubs with the host token,
each test as its own tenant (:attr:`Host.tenant`). Folders under :attr:`Host.root` may be ingested
as ``path`` sources.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from opentier.config import HostSettings, IngestionSettings, Settings
from opentier.generated.intelligence.v1 import (
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    documents_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from opentier.host.auth import bearer_metadata
from opentier.host.errors import ERROR_CODE_KEY
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins
from tests.engine.helpers import HashEmbedder, plugin

TOKEN = "test-host-token-ingest-0123456789"
AUTH = bearer_metadata(TOKEN)
#: Smaller than the default so that the oversize test needs little memory.
MAX_UPLOAD = 64 * 1024


def host_settings(db_settings: Settings, data_dir: Path, root: Path, **ingestion: Any) -> Settings:
    options: dict[str, Any] = {
        "embedder": "test-hash",
        "cleaners": ["unicode", "whitespace"],  # from basic-cleaners, the only cleaner plugin loaded
        "roots": [root],
        "chunk_tokens": 64,
        "chunk_overlap_tokens": 8,
        "max_upload_bytes": MAX_UPLOAD,
        "workers": 2,
    } | ingestion
    return db_settings.model_copy(
        update={
            "data_dir": data_dir,
            "host": HostSettings(port=0, grace_seconds=1.0, token=TOKEN),
            "ingestion": IngestionSettings(**options),
        }
    )


@dataclass
class Host:
    server: HostServer
    settings: Settings
    embedder: HashEmbedder
    channel: grpc.aio.Channel
    root: Path
    tenant: str

    @property
    def runtime(self) -> HostRuntime:
        assert self.server.runtime is not None
        return self.server.runtime

    def caller(self, tenant: str | None = None) -> common_pb2.Caller:
        return common_pb2.Caller(tenant_id=self.tenant if tenant is None else tenant, user_id="tester")

    @property
    def collections(self) -> collections_pb2_grpc.CollectionServiceAsyncStub:
        return collections_pb2_grpc.CollectionServiceStub(self.channel)

    @property
    def documents(self) -> documents_pb2_grpc.DocumentServiceAsyncStub:
        return documents_pb2_grpc.DocumentServiceStub(self.channel)

    @property
    def ingest(self) -> ingest_pb2_grpc.IngestServiceAsyncStub:
        return ingest_pb2_grpc.IngestServiceStub(self.channel)

    async def create_collection(self, name: str = "docs") -> collections_pb2.Collection:
        request = collections_pb2.CreateCollectionRequest(caller=self.caller(), name=name)
        return await self.collections.CreateCollection(request, metadata=AUTH, timeout=10)

    async def ingest_all(self, request: ingest_pb2.IngestRequest) -> list[ingest_pb2.IngestEvent]:
        return [event async for event in self.ingest.Ingest(request, metadata=AUTH, timeout=60)]


@pytest_asyncio.fixture
async def host(db_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Host]:
    marker = request.node.get_closest_marker("ingestion")
    overrides: dict[str, Any] = dict(marker.kwargs) if marker else {}
    root = tmp_path / "root"
    root.mkdir()
    settings = host_settings(db_settings, tmp_path / "state", root, **overrides)
    embedder = HashEmbedder()
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners"]), extra=[("test", plugin(embedder))]
    )
    server = HostServer(settings, plugins, TOKEN, runtime=HostRuntime(settings, plugins.registry))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            yield Host(server, settings, embedder, channel, root, f"tenant-{uuid.uuid4().hex[:10]}")
    finally:
        await server.stop()


def trailer(err: grpc.aio.AioRpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            return str(value)
    return None


def write_corpus(root: Path, count: int = 5, prefix: str = "doc") -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"{prefix}{i}.txt"
        path.write_text(
            f"{prefix.title()} {i}.\n\n"
            + " ".join(f"Sentence {j} about wings and lift {i}." for j in range(40))
        )
        paths.append(path)
    return paths
