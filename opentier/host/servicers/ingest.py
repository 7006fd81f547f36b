"""IngestService: ingestion jobs, through :class:`~opentier.engine.jobs.Ingestion`.

A job lives in PostgreSQL, not in the call: a client that stops reading an ``Ingest`` stream
leaves its job running (CancelJob stops it). An ``IngestStream`` whose client goes away before
closing its side never received all its records, so that job is cancelled; the records already
stored stay stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc.aio

from opentier.engine import sources
from opentier.engine.jobs import Ingestion, ItemSpec, JobInfo, JobOptions
from opentier.engine.pipeline import Progress
from opentier.errors import InvalidRequestError
from opentier.generated.intelligence.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from opentier.host.servicers.convert import (
    job_pb,
    job_statuses,
    options_of,
    progress_pb,
    record_item,
    tenant_of,
    upload_item,
    user_of,
)

log = logging.getLogger(__name__)

#: Streamed records written to the job per insert: bounds what the host holds of a stream.
STREAM_BATCH = 200
#: Initial metadata of IngestStream naming the job, so that the client can follow it meanwhile.
JOB_ID_KEY = "opentier-job-id"


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ingestion: Ingestion) -> None:
        self._ingestion = ingestion

    async def Ingest(
        self, request: ingest_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ingest_pb2.IngestEvent]:
        tenant = tenant_of(request.caller)
        options = options_of(request.options)
        source, items = await self._items(tenant, request, options)
        # Subscribed before the job exists: a worker may take a small job, and finish it, before
        # create_job returns; its events wait in the queue.
        job_id = uuid.uuid4()
        with self._ingestion.events.watch(job_id) as queue:
            job = await self._ingestion.create_job(
                tenant,
                request.collection_id,
                source,
                options,
                items,
                created_by=user_of(request.caller),
                job_id=job_id,
            )
            async for event in self._relay(tenant, job, queue):
                yield event

    async def _relay(
        self, tenant: str, job: JobInfo, queue: asyncio.Queue[Progress | None]
    ) -> AsyncIterator[ingest_pb2.IngestEvent]:
        """``started``, the job's progress events, then its ``summary``."""
        follow = self._ingestion.follow(tenant, job.id, queue)
        upcoming: asyncio.Future[Progress | JobInfo] = asyncio.ensure_future(anext(follow))
        try:
            sequence = 1
            yield ingest_pb2.IngestEvent(sequence=sequence, started=job_pb(job))
            while True:
                event = await upcoming
                sequence += 1
                if isinstance(event, JobInfo):
                    yield ingest_pb2.IngestEvent(sequence=sequence, summary=job_pb(event))
                    return
                yield ingest_pb2.IngestEvent(sequence=sequence, progress=progress_pb(event))
                upcoming = asyncio.ensure_future(anext(follow))
        finally:
            upcoming.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await upcoming
            if isinstance(follow, AsyncGenerator):
                await follow.aclose()

    async def _items(
        self, tenant: str, request: ingest_pb2.IngestRequest, options: JobOptions
    ) -> tuple[dict[str, Any], list[ItemSpec]]:
        """The job's source description and work items, from the request's ``source``."""
        which = request.WhichOneof("source")
        if which == "file":
            limit = self._ingestion.settings.max_upload_bytes
            item = upload_item(request.file, request.file.filename.strip(), limit)
            return {"file": item.source}, [item]
        if which == "path":
            if not request.path.strip():
                raise InvalidRequestError("path is empty: name a file or folder on the host")
            collection = await self._ingestion.collections.get(tenant, request.collection_id)
            existing: list[str] = []
            if options.delete_missing:
                existing = await self._ingestion.sources_in(tenant, collection.id)
            # Walking a folder touches the disk: keep it off the event loop.
            items = await asyncio.to_thread(self._ingestion.path_items, request.path, options, existing)
            return {"path": request.path}, items
        if which == "url":
            url = sources.check_url(request.url.strip())
            return {"url": url}, [ItemSpec("url", url)]
        raise InvalidRequestError("set the source to ingest: file, path or url")

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[ingest_pb2.IngestStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> ingest_pb2.IngestJob:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("item") != "start":
            raise InvalidRequestError("the first message of IngestStream must be `start`")
        tenant = tenant_of(first.caller)
        options = options_of(first.start.options)
        job = await self._ingestion.create_job(
            tenant,
            first.start.collection_id,
            {"stream": True},
            options,
            [],
            created_by=user_of(first.caller),
            input_complete=False,
        )
        heartbeat = asyncio.create_task(self._keep_alive(job.id), name=f"stream-heartbeat-{job.id}")
        try:
            await context.send_initial_metadata(((JOB_ID_KEY, str(job.id)),))
            await self._receive(tenant, job.id, request_iterator)
        except BaseException:
            await self._abandon(tenant, job.id)
            raise
        finally:
            heartbeat.cancel()
        return job_pb(await self._ingestion.wait(tenant, job.id))

    async def _receive(
        self, tenant: str, job_id: uuid.UUID, messages: AsyncIterator[ingest_pb2.IngestStreamRequest]
    ) -> None:
        """Add the records to the job in batches as they arrive, then close its input."""
        limit = self._ingestion.settings.max_upload_bytes
        ordinal = 0
        batch: list[ItemSpec] = []
        async for message in messages:
            if message.WhichOneof("item") != "record":
                raise InvalidRequestError("after `start`, every IngestStream message must be a `record`")
            if message.caller.tenant_id not in ("", tenant):
                raise InvalidRequestError("every message of an IngestStream must have the same caller")
            batch.append(record_item(message.record, limit))
            if len(batch) >= STREAM_BATCH:
                ordinal = await self._ingestion.add_items(tenant, job_id, ordinal, batch)
                batch = []
        if batch:
            await self._ingestion.add_items(tenant, job_id, ordinal, batch)
        await self._ingestion.close_input(tenant, job_id)

    async def _keep_alive(self, job_id: uuid.UUID) -> None:
        """While the stream is open, tell other hosts it is (a silent one is swept when we die)."""
        interval = max(0.5, self._ingestion.settings.stream_stale_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._ingestion.keep_stream_alive(job_id)
            except Exception:
                log.exception("could not record that the stream of job %s is alive", job_id)

    async def _abandon(self, tenant: str, job_id: uuid.UUID) -> None:
        """Cancel a stream's job whose input will never be complete, even while being cancelled."""
        cancelling = asyncio.ensure_future(self._ingestion.cancel_job(tenant, job_id))
        try:
            await asyncio.shield(cancelling)
        except asyncio.CancelledError:
            pass  # the shielded cancel goes on by itself
        except Exception:
            log.exception("could not cancel the job %s of a broken IngestStream", job_id)
        else:
            log.info("IngestStream ended before its input was complete: job %s cancelled", job_id)

    async def GetJob(
        self, request: ingest_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.IngestJob:
        return job_pb(await self._ingestion.get_job(tenant_of(request.caller), request.job_id))

    async def ListJobs(
        self, request: ingest_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.ListJobsResponse:
        page = await self._ingestion.list_jobs(
            tenant_of(request.caller),
            collection_id=request.collection_id or None,
            statuses=job_statuses(request.statuses),
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return ingest_pb2.ListJobsResponse(
            jobs=[job_pb(job) for job in page.items],
            page=common_pb2.PageResponse(next_page_token=page.next_token),
        )

    async def CancelJob(
        self, request: ingest_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.IngestJob:
        return job_pb(await self._ingestion.cancel_job(tenant_of(request.caller), request.job_id))
