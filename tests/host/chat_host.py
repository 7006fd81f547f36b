"""A real host for chat tests: the real gRPC server, PostgreSQL, ingestion and the ``vector``
retriever, with the test embedder and the test LLMs of :mod:`tests.engine.chatting`.

``chat_host`` (a fixture of the test modules that import it) starts one per test; parametrize it
indirectly with a dict to change the chat settings: ``@pytest.mark.parametrize("chat_host",
[{"stall_timeout_seconds": 0.3}], indirect=True)``; :func:`serve_chat_host` also takes ``database``
settings (``pool_size``...). :func:`library` ingests three small documents.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import ChatSettings, RetrievalSettings, Settings
from opentier.generated.intelligence.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    conversations_pb2,
    conversations_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins
from tests.engine.chatting import QuotingLLM, ScriptedLLM, llm_plugin
from tests.engine.helpers import HashEmbedder, plugin

from .conftest import AUTH, TOKEN, host_settings

#: Fast limits, so that tests of time limits stay fast; a test may override any chat setting.
CHAT_DEFAULTS: dict[str, Any] = {
    "llm": "scripted",
    "allowed_llms": ["*"],
    "stall_timeout_seconds": 5.0,
    "close_timeout_seconds": 2.0,
    "deadline_seconds": 30.0,
}
USER = "tester"

WINGS = (
    "Wings make lift. Air flows faster over the curved upper surface of a wing, so the pressure above "
    "it drops and the wing is pushed up.\n\nFlaps and slats raise lift at low speed, for take-off and "
    "landing."
)
ENGINES = "Jet engines burn fuel and push hot gas backwards, which pushes the aircraft forwards."
BOATS = "Boats float because the water they push aside weighs as much as the boat itself."


@dataclass
class ChatHost:
    server: HostServer
    channel: grpc.aio.Channel
    tenant: str
    scripted: ScriptedLLM
    quoting: QuotingLLM
    settings: Settings

    def caller(self, tenant: str | None = None, user: str = USER) -> common_pb2.Caller:
        return common_pb2.Caller(tenant_id=tenant or self.tenant, user_id=user)

    @property
    def chat(self) -> chat_pb2_grpc.ChatServiceAsyncStub:
        return chat_pb2_grpc.ChatServiceStub(self.channel)

    @property
    def conversations(self) -> conversations_pb2_grpc.ConversationServiceAsyncStub:
        return conversations_pb2_grpc.ConversationServiceStub(self.channel)

    def start(self, message: str, *, tenant: str | None = None, **fields: Any) -> chat_pb2.ChatRequest:
        return chat_pb2.ChatRequest(
            caller=self.caller(tenant), start=chat_pb2.ChatStart(message=message, **fields)
        )

    async def ask(
        self, message: str, *, tenant: str | None = None, **fields: Any
    ) -> list[chat_pb2.ChatEvent]:
        """One whole turn: start, half-close, read every event."""
        call = self.chat.Chat(metadata=AUTH, timeout=30)
        await call.write(self.start(message, tenant=tenant, **fields))
        await call.done_writing()
        return [event async for event in call]

    async def conversation(
        self, conversation_id: str, tenant: str | None = None, user: str = USER
    ) -> conversations_pb2.GetConversationResponse:
        request = conversations_pb2.GetConversationRequest(
            caller=self.caller(tenant, user), conversation_id=conversation_id
        )
        return await self.conversations.GetConversation(request, metadata=AUTH, timeout=10)

    async def collection(self, name: str = "docs") -> collections_pb2.Collection:
        stub = collections_pb2_grpc.CollectionServiceStub(self.channel)
        request = collections_pb2.CreateCollectionRequest(caller=self.caller(), name=name)
        return await stub.CreateCollection(request, metadata=AUTH, timeout=10)

    async def upload(self, collection_id: str, filename: str, text: str) -> str:
        """Ingest ``text`` as the file ``filename``; return the document's id."""
        stub = ingest_pb2_grpc.IngestServiceStub(self.channel)
        request = ingest_pb2.IngestRequest(
            caller=self.caller(),
            collection_id=collection_id,
            file=ingest_pb2.UploadedFile(filename=filename, data=text.encode()),
        )
        events = [event async for event in stub.Ingest(request, metadata=AUTH, timeout=60)]
        created = [e.progress.document_id for e in events if e.progress.document_id]
        assert events[-1].summary.counts.created == 1, events[-1]
        return created[-1]


@contextlib.asynccontextmanager
async def serve_chat_host(
    db_settings: Settings,
    data_dir: Path,
    *,
    installed: Sequence[str] = (),
    database: Mapping[str, Any] | None = None,
    **chat: Any,
) -> AsyncIterator[ChatHost]:
    """A host with the test models, plus the ``installed`` plugins named (entry-point names)."""
    root = data_dir / "root"
    root.mkdir(parents=True)
    settings = host_settings(db_settings, data_dir / "state", root).model_copy(
        update={
            "database": db_settings.database.model_copy(update=dict(database or {})),
            "retrieval": RetrievalSettings(retriever="vector"),
            "chat": ChatSettings(**(CHAT_DEFAULTS | chat)),
        }
    )
    scripted, quoting = ScriptedLLM(), QuotingLLM()
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners", "vector", *installed]),
        extra=[("test", plugin(HashEmbedder())), ("test-llms", llm_plugin(scripted, quoting))],
    )
    server = HostServer(settings, plugins, TOKEN, runtime=HostRuntime(settings, plugins.registry))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            tenant = f"tenant-{uuid.uuid4().hex[:10]}"
            yield ChatHost(server, channel, tenant, scripted, quoting, settings)
    finally:
        await server.stop()


async def library(host: ChatHost) -> tuple[str, dict[str, str]]:
    """A collection holding three small documents: (collection id, {source: document id})."""
    collection = await host.collection()
    documents = {
        name: await host.upload(collection.id, name, text)
        for name, text in (("wings.txt", WINGS), ("engines.txt", ENGINES), ("boats.txt", BOATS))
    }
    return collection.id, documents


async def chunk_ids(engine: AsyncEngine, document_id: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT id FROM intelligence.chunks WHERE document_id = :d"),
            {"d": uuid.UUID(document_id)},
        )
        return {str(row.id) for row in rows}


def kinds(events: list[chat_pb2.ChatEvent]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


def answer_text(events: list[chat_pb2.ChatEvent]) -> str:
    return "".join(event.token.text for event in events if event.HasField("token"))
