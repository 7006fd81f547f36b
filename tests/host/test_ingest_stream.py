"""IngestStream through the real gRPC host: records are ingested as they arrive, memory stays bounded."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterable

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.generated.intelligence.v1 import documents_pb2, ingest_pb2
from opentier.host.servicers.ingest import JOB_ID_KEY

from .conftest import AUTH, MAX_UPLOAD, Host, trailer

RECORDS = 10_000
#: Text per record: the stream carries 20 MB of text, which a host holding it would keep at once.
RECORD_TEXT_BYTES = 2_000
#: Limit of the peak of Python allocations during the whole call (client, host and its ingestion
#: workers share this process, and so does whatever earlier tests left running in it): well under the
#: 20 MB of text streamed. Measured 4.4 MiB when the test runs alone, mostly the workers' batches
#: (ingestion.batch_items documents each), which do not grow with the stream; 7.9 MiB after the other
#: host tests and 11.5 MiB once after the whole suite (allocations of other parts of the process).
PEAK_LIMIT_BYTES = 16 * 1024 * 1024


def start(host: Host, collection_id: str, **options: object) -> ingest_pb2.IngestStreamRequest:
    return ingest_pb2.IngestStreamRequest(
        caller=host.caller(),
        start=ingest_pb2.IngestStreamStart(
            collection_id=collection_id,
            options=ingest_pb2.IngestOptions(**options),  # type: ignore[arg-type]
        ),
    )


def record(**fields: object) -> ingest_pb2.IngestStreamRequest:
    return ingest_pb2.IngestStreamRequest(record=ingest_pb2.IngestRecord(**fields))  # type: ignore[arg-type]


async def messages(
    items: Iterable[ingest_pb2.IngestStreamRequest],
) -> AsyncIterator[ingest_pb2.IngestStreamRequest]:
    for item in items:
        yield item


def record_text(number: int) -> str:
    # Long distinct "words": one chunk per record (the test embedder counts words as tokens).
    words = [hashlib.sha256(f"{number}-{j}".encode()).hexdigest() * 2 for j in range(15)]
    text = f"Record {number}: " + " ".join(words)
    return text[:RECORD_TEXT_BYTES]


async def stream_records(
    host: Host, collection_id: str, count: int
) -> AsyncIterator[ingest_pb2.IngestStreamRequest]:
    yield start(host, collection_id)
    for number in range(count):
        yield record(source=f"tickets/{number:05d}", title=f"Ticket {number}", text=record_text(number))


@pytest.mark.ingestion(near_duplicates="off", batch_items=100)
async def test_a_stream_of_10000_records_is_ingested_with_bounded_memory(
    host: Host, db_engine: AsyncEngine
) -> None:
    collection = await host.create_collection()
    # Garbage left by earlier tests would otherwise be collected (and its cycles' finalisers run)
    # while this one is traced.
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        began = time.perf_counter()
        job = await host.ingest.IngestStream(
            stream_records(host, collection.id, RECORDS), metadata=AUTH, timeout=600
        )
        elapsed = time.perf_counter() - began
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n10,000 streamed records: {elapsed:.1f} s, peak of traced allocations {peak / 2**20:.1f} MiB")

    assert job.status == ingest_pb2.JOB_STATUS_SUCCEEDED and job.source == "stream"
    assert job.counts.items_total == job.counts.items_done == RECORDS
    assert (job.counts.created, job.counts.failed, job.counts.dropped) == (RECORDS, 0, 0)
    async with db_engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text(
                    "SELECT count(DISTINCT d.id), count(c.id) FROM intelligence.documents d "
                    "JOIN intelligence.chunks c ON c.document_id = d.id WHERE d.collection_id = :c"
                ),
                {"c": uuid.UUID(collection.id)},
            )
        ).one()
        payloads = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM intelligence.ingestion_items WHERE job_id = :j AND payload IS NOT NULL"
            ),
            {"j": uuid.UUID(job.id)},
        )
    assert stored == (RECORDS, job.counts.chunks_written)
    assert payloads == 0  # processed records do not keep their text in the job
    streamed = RECORDS * RECORD_TEXT_BYTES
    assert peak < PEAK_LIMIT_BYTES < streamed, f"peak {peak} bytes while streaming {streamed} bytes"


async def test_records_text_files_metadata_and_removal(host: Host) -> None:
    collection = await host.create_collection()
    metadata = struct_pb2.Struct()
    metadata.update({"team": "support"})
    call = host.ingest.IngestStream(
        messages(
            [
                start(host, collection.id),
                record(source="kb/1", title="Flaps", text="Flaps add lift at low speed.", metadata=metadata),
                record(source="kb/2", text="Slats delay the stall."),
                record(
                    file=ingest_pb2.UploadedFile(filename="notes/rudder.txt", data=b"Rudder.\n\nYaw control.")
                ),
            ]
        ),
        metadata=AUTH,
        timeout=60,
    )
    announced = dict(await call.initial_metadata())  # the job id, before the stream ends
    first = await call
    assert announced[JOB_ID_KEY] == first.id
    assert (first.status, first.counts.created, first.created_by) == (
        ingest_pb2.JOB_STATUS_SUCCEEDED,
        3,
        "tester",
    )
    page = await host.documents.ListDocuments(
        documents_pb2.ListDocumentsRequest(caller=host.caller(), collection_id=collection.id), metadata=AUTH
    )
    by_source = {d.source: d for d in page.documents}
    assert set(by_source) == {"kb/1", "kb/2", "notes/rudder.txt"}
    assert by_source["kb/1"].metadata["team"] == "support"
    assert by_source["kb/1"].media_type == "text/plain"

    second = await host.ingest.IngestStream(
        messages(
            [
                start(host, collection.id),
                record(source="kb/1", title="Flaps", text="Flaps add lift at low speed.", metadata=metadata),
                record(source="kb/2", text="Slats delay the stall; so do vortex generators."),
                record(source="kb/3", remove=True),  # never existed: nothing to do
                record(source="notes/rudder.txt", remove=True),
            ]
        ),
        metadata=AUTH,
        timeout=60,
    )
    counts = second.counts
    assert (counts.unchanged, counts.updated, counts.deleted, counts.items_total) == (1, 1, 1, 4)
    page = await host.documents.ListDocuments(
        documents_pb2.ListDocumentsRequest(caller=host.caller(), collection_id=collection.id), metadata=AUTH
    )
    assert [(d.source, d.version) for d in page.documents] == [("kb/1", 1), ("kb/2", 2)]


async def test_a_record_title_wins(host: Host) -> None:
    collection = await host.create_collection()
    await host.ingest.IngestStream(
        messages([start(host, collection.id), record(source="kb/1", title="Flaps", text="Flaps add lift.")]),
        metadata=AUTH,
        timeout=60,
    )
    page = await host.documents.ListDocuments(
        documents_pb2.ListDocumentsRequest(caller=host.caller(), collection_id=collection.id), metadata=AUTH
    )
    assert [d.title for d in page.documents] == ["Flaps"]


async def test_malformed_streams_are_refused(host: Host) -> None:
    collection = await host.create_collection()
    cases = [
        ([], "the first message of IngestStream must be `start`"),
        ([record(source="a", text="x")], "the first message of IngestStream must be `start`"),
        ([start(host, collection.id), start(host, collection.id)], "must be a `record`"),
        ([start(host, collection.id), record(text="no source")], "needs a source"),
        ([start(host, collection.id), record(source="a")], "set its content"),
        ([start(host, collection.id), record(source="a", remove=False)], "remove must be true"),
        (
            [start(host, collection.id), record(source="big", text="x" * (MAX_UPLOAD + 1))],
            "ingestion.max_upload_bytes",
        ),
    ]
    for items, problem in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await host.ingest.IngestStream(messages(items), metadata=AUTH, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, problem
        assert problem in (info.value.details() or ""), info.value.details()
    assert trailer(info.value) == "source_too_large"
    # Every job a broken stream created was cancelled, none is left open.
    jobs = await host.ingest.ListJobs(ingest_pb2.ListJobsRequest(caller=host.caller()), metadata=AUTH)
    assert len(jobs.jobs) == 5
    assert {job.status for job in jobs.jobs} == {ingest_pb2.JOB_STATUS_CANCELLED}


async def test_a_stream_whose_client_goes_away_is_cancelled(host: Host) -> None:
    collection = await host.create_collection()
    sent = asyncio.Event()

    async def then_hang() -> AsyncIterator[ingest_pb2.IngestStreamRequest]:
        yield start(host, collection.id)
        yield record(source="kb/1", text="Flaps add lift.")
        sent.set()
        await asyncio.sleep(3600)

    call = host.ingest.IngestStream(then_hang(), metadata=AUTH, timeout=60)
    await asyncio.wait_for(sent.wait(), 10)
    jobs = ingest_pb2.ListJobsRequest(caller=host.caller())
    for _ in range(100):
        listed = await host.ingest.ListJobs(jobs, metadata=AUTH)
        if listed.jobs:
            break
        await asyncio.sleep(0.05)
    assert listed.jobs[0].status in {ingest_pb2.JOB_STATUS_QUEUED, ingest_pb2.JOB_STATUS_RUNNING}
    call.cancel()
    for _ in range(300):  # the server learns of the cancel asynchronously; generous under load
        listed = await host.ingest.ListJobs(jobs, metadata=AUTH)
        if listed.jobs[0].status == ingest_pb2.JOB_STATUS_CANCELLED:
            break
        await asyncio.sleep(0.05)
    assert listed.jobs[0].status == ingest_pb2.JOB_STATUS_CANCELLED
