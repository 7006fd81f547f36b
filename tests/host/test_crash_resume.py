"""A host killed with SIGKILL in the middle of a job: a restarted host finishes the job, and the
database holds every document exactly once with exactly its chunks (checked by SQL).

The host runs as a real subprocess (`opentier host serve`) with the real MiniLM embedder, against the
session's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc.aio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.generated.intelligence.v1 import (
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
)
from opentier.host.auth import bearer_metadata

OPENTIER = Path(sys.executable).with_name("opentier")
TOKEN = "crash-test-token-0123456789abcdef"
FILES = 240

pytest.importorskip("opentier_embedder_minilm", reason="needs the built-in MiniLM embedder plugin")


def start_host(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [str(OPENTIER), "host", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        match = re.search(r"opentier host serving on (\S+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise AssertionError("the host did not start:\n" + "".join(lines))


async def job_state(target: str, tenant: str, job_id: str) -> ingest_pb2.IngestJob:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        request = ingest_pb2.GetJobRequest(caller=common_pb2.Caller(tenant_id=tenant), job_id=job_id)
        job: ingest_pb2.IngestJob = await stub.GetJob(request, metadata=bearer_metadata(TOKEN), timeout=10)
        return job


async def begin(target: str, tenant: str, corpus: Path) -> str:
    caller = common_pb2.Caller(tenant_id=tenant, user_id="tester")
    auth = bearer_metadata(TOKEN)
    async with grpc.aio.insecure_channel(target) as channel:
        collections = collections_pb2_grpc.CollectionServiceStub(channel)
        collection = await collections.CreateCollection(
            collections_pb2.CreateCollectionRequest(caller=caller, name="crash"), metadata=auth, timeout=30
        )
        stream = ingest_pb2_grpc.IngestServiceStub(channel).Ingest(
            ingest_pb2.IngestRequest(caller=caller, collection_id=collection.id, path=str(corpus)),
            metadata=auth,
        )
        first = await stream.read()
        stream.cancel()  # the job goes on without a watcher
        job_id: str = first.started.id
        return job_id


async def test_killed_host_resumes_the_job_without_duplicates(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(FILES):
        (corpus / f"note{i:03}.txt").write_text(
            f"Note {i}. "
            + " ".join(f"Observation {j} of wind tunnel run {i} at Mach {j / 10}." for j in range(12))
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    env.update(
        {
            "OPENTIER_DATABASE__URL": database_url,
            "OPENTIER_DATA_DIR": str(tmp_path / "state"),
            "OPENTIER_HOST__PORT": "0",
            "OPENTIER_HOST__TOKEN": TOKEN,
            "OPENTIER_INGESTION__ROOTS": json.dumps([str(corpus)]),
            "OPENTIER_INGESTION__BATCH_ITEMS": "4",
            "OPENTIER_INGESTION__EMBEDDER": "minilm",
        }
    )
    tenant = f"crash-{uuid.uuid4().hex[:8]}"
    host, target = start_host(env)
    try:
        job_id = await begin(target, tenant, corpus)
        deadline = time.monotonic() + 120
        while (await job_state(target, tenant, job_id)).counts.items_done < 12:
            assert time.monotonic() < deadline, "the job made no progress"
            await asyncio.sleep(0.1)
        os.killpg(host.pid, signal.SIGKILL)
        host.wait(timeout=10)
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()

    async with db_engine.connect() as conn:
        status, done = (
            await conn.execute(
                sa.text(
                    "SELECT j.status, count(*) FILTER (WHERE i.status = 'done') FROM intelligence.ingestion_jobs j "
                    "JOIN intelligence.ingestion_items i ON i.job_id = j.id WHERE j.id = :id GROUP BY j.status"
                ),
                {"id": job_id},
            )
        ).one()
    assert status == "running" and 0 < done < FILES, "the kill must land in the middle of the job"

    host, target = start_host(env)
    try:
        deadline = time.monotonic() + 180
        while (job := await job_state(target, tenant, job_id)).status != ingest_pb2.JOB_STATUS_SUCCEEDED:
            assert time.monotonic() < deadline, f"the job did not finish after the restart: {job}"
            await asyncio.sleep(0.2)
        assert (job.counts.created, job.counts.failed, job.counts.items_done) == (FILES, 0, FILES)
    finally:
        os.killpg(host.pid, signal.SIGINT)
        assert host.wait(timeout=30) == 0

    async with db_engine.connect() as conn:
        collection = await conn.scalar(
            sa.text("SELECT collection_id FROM intelligence.ingestion_jobs WHERE id = :id"), {"id": job_id}
        )
        documents = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM intelligence.documents WHERE collection_id = :c AND status = 'ready'"
            ),
            {"c": collection},
        )
        mismatched = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM intelligence.documents d WHERE d.collection_id = :c AND d.chunk_count <> "
                "(SELECT count(*) FROM intelligence.chunks c WHERE c.document_id = d.id)"
            ),
            {"c": collection},
        )
        duplicated_texts = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM (SELECT document_id, text FROM intelligence.chunks WHERE collection_id = :c "
                "GROUP BY document_id, text HAVING count(*) > 1) AS twice"
            ),
            {"c": collection},
        )
        versions = await conn.scalar(
            sa.text("SELECT max(version) FROM intelligence.documents WHERE collection_id = :c"),
            {"c": collection},
        )
    assert documents == FILES
    assert mismatched == 0
    assert duplicated_texts == 0
    assert versions == 1, "no document was written twice"


async def test_a_stream_whose_host_dies_is_cancelled_by_the_next_host(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine
) -> None:
    """SIGKILL while a client streams records: the job must not stay open for ever."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    env.update(
        {
            "OPENTIER_DATABASE__URL": database_url,
            "OPENTIER_DATA_DIR": str(tmp_path / "state"),
            "OPENTIER_HOST__PORT": "0",
            "OPENTIER_HOST__TOKEN": TOKEN,
            "OPENTIER_INGESTION__EMBEDDER": "minilm",
            "OPENTIER_INGESTION__STREAM_STALE_SECONDS": "2",
        }
    )
    tenant = f"stream-crash-{uuid.uuid4().hex[:8]}"
    caller = common_pb2.Caller(tenant_id=tenant, user_id="tester")
    auth = bearer_metadata(TOKEN)
    host, target = start_host(env)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            collection = await collections_pb2_grpc.CollectionServiceStub(channel).CreateCollection(
                collections_pb2.CreateCollectionRequest(caller=caller, name="stream"),
                metadata=auth,
                timeout=30,
            )
            sent = asyncio.Event()
            hang = asyncio.Event()  # never set: the client keeps the stream open

            async def records():  # type: ignore[no-untyped-def]
                yield ingest_pb2.IngestStreamRequest(
                    caller=caller, start=ingest_pb2.IngestStreamStart(collection_id=collection.id)
                )
                for i in range(300):
                    yield ingest_pb2.IngestStreamRequest(
                        caller=caller,
                        record=ingest_pb2.IngestRecord(
                            source=f"r{i}", text=f"Record {i} about wing flutter."
                        ),
                    )
                sent.set()
                await hang.wait()

            call = ingest_pb2_grpc.IngestServiceStub(channel).IngestStream(records(), metadata=auth)
            job_id = dict(await call.initial_metadata())["opentier-job-id"]
            await asyncio.wait_for(sent.wait(), 30)
            deadline = time.monotonic() + 60
            while (await job_state(target, tenant, job_id)).counts.items_done < 1:
                assert time.monotonic() < deadline, "no record was ingested"
                await asyncio.sleep(0.1)
            os.killpg(host.pid, signal.SIGKILL)
            host.wait(timeout=10)
            call.cancel()
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()

    host, target = start_host(env)
    try:
        deadline = time.monotonic() + 30
        while (job := await job_state(target, tenant, job_id)).status != ingest_pb2.JOB_STATUS_CANCELLED:
            assert time.monotonic() < deadline, f"the interrupted stream's job stayed open: {job}"
            await asyncio.sleep(0.2)
        assert job.error.code == "stream_interrupted"
        deadline = time.monotonic() + 30
        while (counts := await stream_job_counts(db_engine, job_id))[0]:
            assert time.monotonic() < deadline, f"{counts[0]} items stay pending under the cancelled job"
            await asyncio.sleep(0.2)
        assert counts[1] >= 1, "the records ingested before the kill stay"
    finally:
        os.killpg(host.pid, signal.SIGINT)
        assert host.wait(timeout=30) == 0


async def stream_job_counts(db_engine: AsyncEngine, job_id: str) -> tuple[int, int]:
    """(items still pending, documents ready in the job's collection)."""
    async with db_engine.connect() as conn:
        pending, ready = (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE i.status = 'pending'), "
                    "(SELECT count(*) FROM intelligence.documents d JOIN intelligence.ingestion_jobs j "
                    " ON j.collection_id = d.collection_id WHERE j.id = :id AND d.status = 'ready') "
                    "FROM intelligence.ingestion_items i WHERE i.job_id = :id"
                ),
                {"id": job_id},
            )
        ).one()
    return int(pending), int(ready)
