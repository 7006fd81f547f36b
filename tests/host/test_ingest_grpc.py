"""Ingestion through the real gRPC host: Ingest streams, uploads, limits, cancel, job listing."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.generated.intelligence.v1 import (
    collections_pb2,
    common_pb2,
    documents_pb2,
    ingest_pb2,
)

from .conftest import AUTH, MAX_UPLOAD, Host, trailer, write_corpus

CREATED = ingest_pb2.INGEST_DOCUMENT_STATUS_CREATED
IN_PROGRESS = ingest_pb2.INGEST_DOCUMENT_STATUS_IN_PROGRESS


async def chunk_count(engine: AsyncEngine, column: str, value: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            sa.text(f"SELECT count(*) FROM intelligence.chunks WHERE {column} = :value"),
            {"value": uuid.UUID(value)},
        )
    return int(found or 0)


async def test_ingest_a_folder_streams_started_progress_and_summary(
    host: Host, db_engine: AsyncEngine
) -> None:
    collection = await host.create_collection()
    folder = host.root / "manuals"
    folder.mkdir()
    write_corpus(folder, 5)
    request = ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection.id, path=str(folder))
    events = await host.ingest_all(request)

    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "started" and kinds[-1] == "summary"
    assert set(kinds[1:-1]) == {"progress"}
    started, summary = events[0].started, events[-1].summary
    assert started.status in {ingest_pb2.JOB_STATUS_QUEUED, ingest_pb2.JOB_STATUS_RUNNING}
    assert started.source == str(folder) and started.created_by == "tester"
    assert started.counts.items_total == 5

    progress = [event.progress for event in events[1:-1]]
    assert all(p.job_id == started.id for p in progress)
    done = {p.source: p for p in progress if p.status != IN_PROGRESS}
    assert set(done) == {f"manuals/doc{i}.txt" for i in range(5)}
    assert all(p.status == CREATED and p.stage == documents_pb2.INGEST_STAGE_DONE for p in done.values())
    assert all(p.chunk_count > 0 and p.document_id and p.size_bytes > 0 for p in done.values())
    stages = {p.stage for p in progress if p.status == IN_PROGRESS}
    assert {documents_pb2.INGEST_STAGE_LOADING, documents_pb2.INGEST_STAGE_EMBEDDING} <= stages

    assert summary.status == ingest_pb2.JOB_STATUS_SUCCEEDED
    counts = summary.counts
    assert (counts.created, counts.failed, counts.documents_seen) == (5, 0, 5)
    assert counts.items_total == counts.items_done == 5
    assert counts.chunks_written == sum(p.chunk_count for p in done.values())
    assert counts.chunks_written == await chunk_count(db_engine, "collection_id", collection.id)
    assert summary.started_at.seconds and summary.finished_at.seconds

    again = await host.ingest_all(request)
    assert (again[-1].summary.counts.unchanged, again[-1].summary.counts.chunks_written) == (5, 0)
    fetched = await host.collections.GetCollection(
        collections_pb2.GetCollectionRequest(caller=host.caller(), collection_id=collection.id),
        metadata=AUTH,
        timeout=10,
    )
    assert (fetched.document_count, fetched.chunk_count) == (5, counts.chunks_written)


async def test_a_failed_document_is_reported_with_stage_and_reason(host: Host) -> None:
    collection = await host.create_collection()
    write_corpus(host.root, 2)
    (host.root / "scan.broken").write_bytes(b"%PDF-1.4 garbage")
    events = await host.ingest_all(
        ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection.id, path=str(host.root))
    )
    summary = events[-1].summary
    assert summary.status == ingest_pb2.JOB_STATUS_SUCCEEDED  # one bad document never fails the job
    assert (summary.counts.created, summary.counts.failed) == (2, 1)
    failed = [
        e.progress for e in events[1:-1] if e.progress.status == ingest_pb2.INGEST_DOCUMENT_STATUS_FAILED
    ]
    assert [(p.source, p.stage) for p in failed] == [("scan.broken", documents_pb2.INGEST_STAGE_LOADING)]
    assert failed[0].error.code == "document_unreadable" and "corrupt" in failed[0].error.message


async def test_upload_a_file(host: Host, db_engine: AsyncEngine) -> None:
    collection = await host.create_collection()
    upload = ingest_pb2.UploadedFile(
        filename="notes.txt", data=b"Flaps raise lift at low speed.\n\nSlats help too. " * 20
    )
    events = await host.ingest_all(
        ingest_pb2.IngestRequest(
            caller=host.caller(),
            collection_id=collection.id,
            file=upload,
            options=ingest_pb2.IngestOptions(metadata={"team": "wings"}),
        )
    )
    summary = events[-1].summary
    assert (summary.source, summary.counts.created) == ("notes.txt", 1)
    assert dict(summary.options.metadata) == {"team": "wings"}
    document_id = next(e.progress.document_id for e in events if e.progress.status == CREATED)
    document = await host.documents.GetDocument(
        documents_pb2.GetDocumentRequest(caller=host.caller(), document_id=document_id),
        metadata=AUTH,
        timeout=10,
    )
    assert document.status == documents_pb2.DOCUMENT_STATUS_READY
    assert (document.source, document.media_type, document.version) == ("notes.txt", "text/plain", 1)
    assert document.size_bytes == len(upload.data) and document.content_hash
    assert document.chunk_count == await chunk_count(db_engine, "document_id", document_id) > 0
    assert document.metadata["team"] == "wings"
    assert not document.HasField("page_count") and not document.HasField("error")
    assert document.indexed_at == document.updated_at


async def test_an_oversize_upload_is_refused(host: Host) -> None:
    collection = await host.create_collection()
    upload = ingest_pb2.UploadedFile(filename="big.txt", data=b"x" * (MAX_UPLOAD + 1))
    request = ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection.id, file=upload)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await host.ingest_all(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(info.value) == "source_too_large"
    assert "ingestion.max_upload_bytes" in (info.value.details() or "")
    jobs = await host.ingest.ListJobs(ingest_pb2.ListJobsRequest(caller=host.caller()), metadata=AUTH)
    assert list(jobs.jobs) == []


async def test_sources_the_host_refuses(host: Host, tmp_path_factory: pytest.TempPathFactory) -> None:
    collection = await host.create_collection()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    cases = [
        (ingest_pb2.IngestRequest(path=str(elsewhere)), grpc.StatusCode.PERMISSION_DENIED, "source_refused"),
        (
            ingest_pb2.IngestRequest(url="file:///etc/passwd"),
            grpc.StatusCode.PERMISSION_DENIED,
            "source_refused",
        ),
        (ingest_pb2.IngestRequest(path=""), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (ingest_pb2.IngestRequest(), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    ]
    for request, status, code in cases:
        request.caller.CopyFrom(host.caller())
        request.collection_id = collection.id
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await host.ingest_all(request)
        assert (info.value.code(), trailer(info.value)) == (status, code), request


@pytest.mark.ingestion(workers=1, batch_items=2)
async def test_cancel_job_stops_the_work(host: Host) -> None:
    host.embedder.delay = 0.3
    collection = await host.create_collection()
    write_corpus(host.root, 40)
    call = host.ingest.Ingest(
        ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection.id, path=str(host.root)),
        metadata=AUTH,
        timeout=60,
    )
    started = (await call.read()).started
    while True:
        event = await call.read()
        if event.progress.status == CREATED:
            break
    cancelled = await host.ingest.CancelJob(
        ingest_pb2.CancelJobRequest(caller=host.caller(), job_id=started.id), metadata=AUTH, timeout=10
    )
    assert cancelled.status == ingest_pb2.JOB_STATUS_CANCELLED
    last = await call.read()
    while last.WhichOneof("event") != "summary":  # the stream ends by itself with the summary
        last = await call.read()
    assert last.summary.status == ingest_pb2.JOB_STATUS_CANCELLED
    assert await call.read() is grpc.aio.EOF
    calls = host.embedder.calls
    await asyncio.sleep(1.0)
    assert host.embedder.calls <= calls + 1, "work went on after CancelJob"
    final = await host.ingest.GetJob(
        ingest_pb2.GetJobRequest(caller=host.caller(), job_id=started.id), metadata=AUTH, timeout=10
    )
    assert final.status == ingest_pb2.JOB_STATUS_CANCELLED and final.finished_at.seconds
    assert final.counts.items_done == final.counts.items_total == 40
    assert 0 < final.counts.created < 40


async def test_a_client_that_goes_away_leaves_the_job_running(host: Host) -> None:
    collection = await host.create_collection()
    write_corpus(host.root, 6)
    call = host.ingest.Ingest(
        ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection.id, path=str(host.root)),
        metadata=AUTH,
        timeout=60,
    )
    started = (await call.read()).started
    call.cancel()
    request = ingest_pb2.GetJobRequest(caller=host.caller(), job_id=started.id)
    for _ in range(200):
        job = await host.ingest.GetJob(request, metadata=AUTH, timeout=10)
        if job.status == ingest_pb2.JOB_STATUS_SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert (job.status, job.counts.created) == (ingest_pb2.JOB_STATUS_SUCCEEDED, 6)


async def three_jobs(host: Host) -> tuple[list[str], collections_pb2.Collection, collections_pb2.Collection]:
    first = await host.create_collection("first")
    second = await host.create_collection("second")
    write_corpus(host.root, 1)
    ids = []
    for collection in (first, second, second):
        events = await host.ingest_all(
            ingest_pb2.IngestRequest(caller=host.caller(), collection_id=collection.id, path=str(host.root))
        )
        ids.append(events[-1].summary.id)
    return ids, first, second


async def test_list_jobs_pages(host: Host) -> None:
    ids, _first, _second = await three_jobs(host)
    seen: list[str] = []
    token = ""
    while True:
        page = await host.ingest.ListJobs(
            ingest_pb2.ListJobsRequest(
                caller=host.caller(), page=common_pb2.PageRequest(page_size=2, page_token=token)
            ),
            metadata=AUTH,
            timeout=10,
        )
        seen += [job.id for job in page.jobs]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]  # newest first


async def test_list_and_get_jobs(host: Host) -> None:
    ids, first, second = await three_jobs(host)
    every = await host.ingest.ListJobs(ingest_pb2.ListJobsRequest(caller=host.caller()), metadata=AUTH)
    assert [job.id for job in every.jobs] == ids[::-1]  # newest first
    assert every.page.next_page_token == ""
    only_second = await host.ingest.ListJobs(
        ingest_pb2.ListJobsRequest(
            caller=host.caller(),
            collection_id=second.id,
            statuses=[ingest_pb2.JOB_STATUS_SUCCEEDED],
        ),
        metadata=AUTH,
        timeout=10,
    )
    assert [job.id for job in only_second.jobs] == ids[:0:-1]
    none_running = await host.ingest.ListJobs(
        ingest_pb2.ListJobsRequest(caller=host.caller(), statuses=[ingest_pb2.JOB_STATUS_RUNNING]),
        metadata=AUTH,
        timeout=10,
    )
    assert list(none_running.jobs) == []
    job = await host.ingest.GetJob(
        ingest_pb2.GetJobRequest(caller=host.caller(), job_id=ids[0]), metadata=AUTH, timeout=10
    )
    assert (job.collection_id, job.source, job.counts.created) == (first.id, str(host.root), 1)
    assert job.options.recursive and not job.options.force
