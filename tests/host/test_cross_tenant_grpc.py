"""Every gRPC method of the host that takes an id, found from the services' own descriptors (a method
added later is tried without naming it), answers NOT_FOUND to another tenant's ids, exactly as to an id
that never existed; and the other tenant's search and chat never see the owner's chunks."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest_asyncio
from google.protobuf import message as pb_message
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor

from opentier.config import Settings
from opentier.generated.intelligence.v1 import (
    chat_pb2,
    collections_pb2,
    conversations_pb2,
    documents_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    plugins_pb2,
    search_pb2,
    search_pb2_grpc,
    tenants_pb2,
)

from .chat_host import WINGS, ChatHost, answer_text, serve_chat_host
from .conftest import AUTH, trailer

MODULES = (
    collections_pb2,
    documents_pb2,
    ingest_pb2,
    search_pb2,
    chat_pb2,
    conversations_pb2,
    tenants_pb2,
    plugins_pb2,
)
#: Field names that hold ids, and the kind of object each names.
KINDS = {"collection": "collection", "document": "document", "job": "job", "conversation": "conversation"}
#: What a request needs besides the id to get as far as looking it up (path of the field: value).
NEEDS: dict[str, dict[str, Any]] = {
    "UpdateCollection": {"name": "mine now"},
    "UpdateConversation": {"title": "mine now"},
    "Ingest": {"file": {"filename": "x.txt", "data": b"intruder"}},
    "Chat": {"start.message": "What is secret?"},
    "Search": {"query": "wings"},
    "CreateConversation": {"title": "intruder"},
}


@dataclasses.dataclass
class IdField:
    path: tuple[str, ...]
    kind: str
    repeated: bool


def id_fields(message: Descriptor, prefix: tuple[str, ...] = ()) -> list[IdField]:
    found = []
    for field in message.fields:
        if field.name == "caller":
            continue
        nested = field.message_type
        if nested is not None and nested.full_name.startswith("opentier."):
            found += id_fields(nested, (*prefix, field.name))
            continue
        stem = field.name.removesuffix("_ids").removesuffix("_id")
        if stem != field.name and stem in KINDS:
            found.append(IdField((*prefix, field.name), KINDS[stem], field.is_repeated))
    return found


def methods() -> list[tuple[MethodDescriptor, list[IdField]]]:
    found = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                fields = id_fields(method.input_type)
                if fields:
                    found.append((method, fields))
    return found


def request(method: MethodDescriptor, host: ChatHost, tenant: str, field: IdField, value: str) -> Any:
    cls = message_factory.GetMessageClass(method.input_type)
    built = cls(caller=host.caller(tenant))
    values: dict[str, Any] = dict(NEEDS.get(method.name, {}))
    values[".".join(field.path)] = [value] if field.repeated else value
    for dotted, item in values.items():
        *parents, name = dotted.split(".")
        target: pb_message.Message = built
        for parent in parents:
            target = getattr(target, parent)
        if isinstance(item, dict):
            getattr(target, name).CopyFrom(getattr(target, name).__class__(**item))
        elif isinstance(item, list):
            getattr(target, name).extend(item)
        else:
            setattr(target, name, item)
    return built


async def outcome(channel: grpc.aio.Channel, method: MethodDescriptor, sent: Any) -> tuple[str, str]:
    """(status code name, error code) of the call, or of the first error event of a stream."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    output = message_factory.GetMessageClass(method.output_type)
    options: dict[str, Any] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": output.FromString,
    }
    try:
        if method.client_streaming:
            factory = channel.stream_stream if method.server_streaming else channel.stream_unary
            call = factory(path, **options)(metadata=AUTH, timeout=30)
            await call.write(sent)
            await call.done_writing()
            replies = [reply async for reply in call] if method.server_streaming else [await call]
        elif method.server_streaming:
            replies = [
                reply
                async for reply in channel.unary_stream(path, **options)(sent, metadata=AUTH, timeout=30)
            ]
        else:
            replies = [await channel.unary_unary(path, **options)(sent, metadata=AUTH, timeout=30)]
    except grpc.aio.AioRpcError as err:
        return err.code().name, trailer(err) or ""
    for reply in replies:  # a chat reports what went wrong as an error event
        if isinstance(reply, chat_pb2.ChatEvent) and reply.HasField("error"):
            return "EVENT", reply.error.code
    return "OK", ""


@dataclasses.dataclass
class Owned:
    host: ChatHost
    ids: dict[str, str]


@pytest_asyncio.fixture
async def owned(db_settings: Settings, tmp_path: Path) -> AsyncIterator[Owned]:
    async with serve_chat_host(db_settings, tmp_path) as host:
        collection = await host.collection("secret")
        document = await host.upload(collection.id, "wings.txt", WINGS)
        host.scripted.script = ["Wings make lift [1]."]
        events = await host.ask("How do wings lift?", collection_ids=[collection.id])
        assert answer_text(events) == "Wings make lift [1]."
        listed = await ingest_pb2_grpc.IngestServiceStub(host.channel).ListJobs(
            ingest_pb2.ListJobsRequest(caller=host.caller()), metadata=AUTH
        )
        ids = {
            "collection": collection.id,
            "document": document,
            "job": listed.jobs[0].id,
            "conversation": events[0].started.conversation_id,
        }
        yield Owned(host, ids)


async def test_every_grpc_method_taking_an_id_hides_other_tenants(owned: Owned) -> None:
    host, intruder = owned.host, f"intruder-{uuid.uuid4().hex[:8]}"
    found = methods()
    names = {method.name for method, _ in found}
    assert {"GetDocument", "Chat", "IngestStream", "Search", "UpdateConversation"} <= names  # precondition
    for method, fields in found:
        for field in fields:
            theirs = await outcome(
                host.channel, method, request(method, host, intruder, field, owned.ids[field.kind])
            )
            never = await outcome(
                host.channel, method, request(method, host, intruder, field, str(uuid.uuid4()))
            )
            assert theirs in {("NOT_FOUND", "not_found"), ("EVENT", "not_found")}, (
                method.name,
                field,
                theirs,
            )
            assert theirs == never, (method.name, field)
    # The owner's things are all still there, unchanged.
    conversation = await host.conversation(owned.ids["conversation"])
    assert conversation.conversation.title != "mine now" and len(conversation.messages) == 2


async def test_search_and_chat_of_another_tenant_never_see_the_owners_chunks(owned: Owned) -> None:
    host, intruder = owned.host, f"intruder-{uuid.uuid4().hex[:8]}"
    search = search_pb2_grpc.SearchServiceStub(host.channel)
    found = await search.Search(
        search_pb2.SearchRequest(caller=host.caller(intruder), query="How do wings make lift?", top_k=50),
        metadata=AUTH,
    )
    assert list(found.hits) == []
    host.scripted.script = ["Nothing found."]
    events = await host.ask("How do wings make lift?", tenant=intruder)
    assert not [event for event in events if event.HasField("citation")]
    assert [event.retrieval.source_count for event in events if event.HasField("retrieval")] in ([], [0])
    assert "curved upper surface" not in repr(host.scripted.requests[-1])  # nothing of it reached the model
    mine = await search.Search(
        search_pb2.SearchRequest(caller=host.caller(), query="How do wings make lift?", top_k=50),
        metadata=AUTH,
    )
    assert mine.hits and all(hit.document_id == owned.ids["document"] for hit in mine.hits)
