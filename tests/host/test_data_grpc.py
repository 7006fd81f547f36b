"""Collections and documents through the real gRPC host: CRUD, pagination, deletion, tenants."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.generated.intelligence.v1 import (
    collections_pb2,
    common_pb2,
    documents_pb2,
    ingest_pb2,
)

from .conftest import AUTH, Host, trailer, write_corpus


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), trailer(info.value)


async def ingest_folder(host: Host, collection_id: str) -> ingest_pb2.IngestJob:
    events = await host.ingest_all(
        ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection_id, path=str(host.root))
    )
    return events[-1].summary


async def test_the_data_services_are_served(host: Host) -> None:
    stub = health_pb2_grpc.HealthStub(host.channel)
    for service in ("CollectionService", "DocumentService", "IngestService", "PluginService"):
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service=f"opentier.intelligence.v1.{service}"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_collection_crud(host: Host) -> None:
    stub = host.collections
    metadata = struct_pb2.Struct()
    metadata.update({"owner": "wings", "tags": ["a", "b"]})
    created = await stub.CreateCollection(
        collections_pb2.CreateCollectionRequest(
            caller=host.caller(), name="manuals", description="Aircraft manuals", metadata=metadata
        ),
        metadata=AUTH,
        timeout=10,
    )
    assert (created.name, created.embedder, created.dimensions) == ("manuals", "test-hash", 32)
    assert (created.document_count, created.chunk_count) == (0, 0)
    assert created.metadata == metadata and created.created_at.seconds
    duplicate = stub.CreateCollection(
        collections_pb2.CreateCollectionRequest(caller=host.caller(), name="manuals"), metadata=AUTH
    )
    assert await refused(duplicate) == (grpc.StatusCode.ALREADY_EXISTS, "already_exists")
    unknown = stub.CreateCollection(
        collections_pb2.CreateCollectionRequest(caller=host.caller(), name="x", embedder="nope"),
        metadata=AUTH,
    )
    assert await refused(unknown) == (grpc.StatusCode.INVALID_ARGUMENT, "component_unknown")

    for name in ("zeta", "alpha"):
        await host.create_collection(name)
    names: list[str] = []
    token = ""
    while True:
        page = await stub.ListCollections(
            collections_pb2.ListCollectionsRequest(
                caller=host.caller(), page=common_pb2.PageRequest(page_size=2, page_token=token)
            ),
            metadata=AUTH,
        )
        names += [c.name for c in page.collections]
        token = page.page.next_page_token
        if not token:
            break
    assert names == ["alpha", "manuals", "zeta"]

    renamed = await stub.UpdateCollection(
        collections_pb2.UpdateCollectionRequest(
            caller=host.caller(), collection_id=created.id, name="guides"
        ),
        metadata=AUTH,
    )
    assert (renamed.name, renamed.description, renamed.metadata) == ("guides", "Aircraft manuals", metadata)
    cleared = await stub.UpdateCollection(
        collections_pb2.UpdateCollectionRequest(
            caller=host.caller(), collection_id=created.id, metadata=struct_pb2.Struct()
        ),
        metadata=AUTH,
    )
    assert (cleared.name, dict(cleared.metadata)) == ("guides", {})

    write_corpus(host.root, 2)
    job = await ingest_folder(host, created.id)
    deleted = await stub.DeleteCollection(
        collections_pb2.DeleteCollectionRequest(caller=host.caller(), collection_id=created.id), metadata=AUTH
    )
    assert (deleted.documents_deleted, deleted.chunks_deleted) == (2, job.counts.chunks_written)
    gone = stub.GetCollection(
        collections_pb2.GetCollectionRequest(caller=host.caller(), collection_id=created.id), metadata=AUTH
    )
    assert await refused(gone) == (grpc.StatusCode.NOT_FOUND, "not_found")


async def test_list_documents_pages_by_source_and_filters_by_status(host: Host) -> None:
    collection = await host.create_collection()
    write_corpus(host.root, 6)
    (host.root / "scan.broken").write_bytes(b"garbage")
    job = await ingest_folder(host, collection.id)
    assert (job.counts.created, job.counts.failed) == (6, 1)

    def request(token: str = "", **fields: Any) -> documents_pb2.ListDocumentsRequest:
        return documents_pb2.ListDocumentsRequest(
            caller=host.caller(),
            collection_id=collection.id,
            page=common_pb2.PageRequest(page_size=3, page_token=token),
            **fields,
        )

    sizes, sources, token = [], [], ""
    while True:
        page = await host.documents.ListDocuments(request(token), metadata=AUTH, timeout=10)
        sizes.append(len(page.documents))
        sources += [d.source for d in page.documents]
        token = page.page.next_page_token
        if not token:
            break
    assert sizes == [3, 3, 1]
    assert sources == sorted([f"doc{i}.txt" for i in range(6)] + ["scan.broken"])

    failed = await host.documents.ListDocuments(
        request(statuses=[documents_pb2.DOCUMENT_STATUS_FAILED]), metadata=AUTH
    )
    assert [d.source for d in failed.documents] == ["scan.broken"]
    broken = failed.documents[0]
    assert broken.failed_stage == documents_pb2.INGEST_STAGE_LOADING
    assert broken.error.code == "document_failed" and "corrupt" in broken.error.message
    assert broken.chunk_count == 0 and not broken.HasField("indexed_at")
    ready = await host.documents.ListDocuments(
        request(statuses=[documents_pb2.DOCUMENT_STATUS_READY, documents_pb2.DOCUMENT_STATUS_DROPPED]),
        metadata=AUTH,
    )
    assert len(ready.documents) == 3 and ready.page.next_page_token
    everywhere = await host.documents.ListDocuments(
        documents_pb2.ListDocumentsRequest(caller=host.caller()), metadata=AUTH
    )
    assert len(everywhere.documents) == 7  # no collection: every collection of the tenant

    bad_token = host.documents.ListDocuments(request("not-a-token"), metadata=AUTH)
    assert await refused(bad_token) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
    bad_status = host.documents.ListDocuments(
        request(statuses=[documents_pb2.DOCUMENT_STATUS_UNSPECIFIED]), metadata=AUTH
    )
    assert await refused(bad_status) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")


async def test_delete_document_removes_its_chunks(host: Host, db_engine: AsyncEngine) -> None:
    collection = await host.create_collection()
    write_corpus(host.root, 3)
    await ingest_folder(host, collection.id)
    page = await host.documents.ListDocuments(
        documents_pb2.ListDocumentsRequest(caller=host.caller(), collection_id=collection.id), metadata=AUTH
    )
    victim, *others = page.documents

    async def chunks_of(document_id: str) -> int:
        async with db_engine.connect() as conn:
            count = await conn.scalar(
                sa.text("SELECT count(*) FROM intelligence.chunks WHERE document_id = :id"),
                {"id": uuid.UUID(document_id)},
            )
        return int(count or 0)

    before = await chunks_of(victim.id)
    assert before == victim.chunk_count > 0
    reply = await host.documents.DeleteDocument(
        documents_pb2.DeleteDocumentRequest(caller=host.caller(), document_id=victim.id), metadata=AUTH
    )
    assert reply.chunks_deleted == before
    assert await chunks_of(victim.id) == 0
    assert [await chunks_of(other.id) for other in others] == [other.chunk_count for other in others]
    again = host.documents.DeleteDocument(
        documents_pb2.DeleteDocumentRequest(caller=host.caller(), document_id=victim.id), metadata=AUTH
    )
    assert await refused(again) == (grpc.StatusCode.NOT_FOUND, "not_found")
    fetched = await host.collections.GetCollection(
        collections_pb2.GetCollectionRequest(caller=host.caller(), collection_id=collection.id), metadata=AUTH
    )
    assert fetched.document_count == 2


async def test_another_tenant_sees_nothing(host: Host) -> None:
    collection = await host.create_collection()
    write_corpus(host.root, 1)
    job = await ingest_folder(host, collection.id)
    document = (
        await host.documents.ListDocuments(
            documents_pb2.ListDocumentsRequest(caller=host.caller(), collection_id=collection.id),
            metadata=AUTH,
        )
    ).documents[0]
    other = host.caller("someone-else")
    not_found = (grpc.StatusCode.NOT_FOUND, "not_found")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: host.collections.GetCollection(
            collections_pb2.GetCollectionRequest(caller=other, collection_id=collection.id), metadata=AUTH
        ),
        lambda: host.collections.UpdateCollection(
            collections_pb2.UpdateCollectionRequest(caller=other, collection_id=collection.id, name="mine"),
            metadata=AUTH,
        ),
        lambda: host.collections.DeleteCollection(
            collections_pb2.DeleteCollectionRequest(caller=other, collection_id=collection.id), metadata=AUTH
        ),
        lambda: host.documents.ListDocuments(
            documents_pb2.ListDocumentsRequest(caller=other, collection_id=collection.id), metadata=AUTH
        ),
        lambda: host.documents.GetDocument(
            documents_pb2.GetDocumentRequest(caller=other, document_id=document.id), metadata=AUTH
        ),
        lambda: host.documents.DeleteDocument(
            documents_pb2.DeleteDocumentRequest(caller=other, document_id=document.id), metadata=AUTH
        ),
        lambda: host.ingest.GetJob(ingest_pb2.GetJobRequest(caller=other, job_id=job.id), metadata=AUTH),
        lambda: host.ingest.CancelJob(
            ingest_pb2.CancelJobRequest(caller=other, job_id=job.id), metadata=AUTH
        ),
        lambda: host.ingest_all(
            ingest_pb2.IngestRequest(caller=other, collection_id=collection.id, path=str(host.root))
        ),
    ]
    for call in calls:
        assert await refused(call()) == not_found
    collections = await host.collections.ListCollections(
        collections_pb2.ListCollectionsRequest(caller=other), metadata=AUTH
    )
    documents = await host.documents.ListDocuments(
        documents_pb2.ListDocumentsRequest(caller=other), metadata=AUTH
    )
    jobs = await host.ingest.ListJobs(ingest_pb2.ListJobsRequest(caller=other), metadata=AUTH)
    assert (list(collections.collections), list(documents.documents), list(jobs.jobs)) == ([], [], [])
    # the owner still has everything
    mine = await host.documents.GetDocument(
        documents_pb2.GetDocumentRequest(caller=host.caller(), document_id=document.id), metadata=AUTH
    )
    assert mine.id == document.id


async def test_an_empty_tenant_is_refused(host: Host) -> None:
    nobody = common_pb2.Caller(user_id="someone")
    calls: list[Awaitable[Any]] = [
        host.collections.ListCollections(
            collections_pb2.ListCollectionsRequest(caller=nobody), metadata=AUTH
        ),
        host.documents.ListDocuments(documents_pb2.ListDocumentsRequest(caller=nobody), metadata=AUTH),
        host.ingest.ListJobs(ingest_pb2.ListJobsRequest(), metadata=AUTH),
        host.ingest_all(ingest_pb2.IngestRequest(caller=nobody, url="https://example.org/")),
    ]
    for call in calls:
        code, error = await refused(call)
        assert (code, error) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
