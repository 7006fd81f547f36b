"""The sample ``opentier up --demo`` ingests: a few short pages about OpenTier itself, in collection
``demo`` of the default tenant, so that the first question already has an answer.

They go to the running host over gRPC (IngestStream), like ``opentier ingest`` sends files. Running it
again is cheap: a page whose content did not change is left as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources

import grpc.aio

from opentier.cli.client import HostClient, remote_error
from opentier.config import Settings
from opentier.errors import AlreadyExistsError, OpenTierError
from opentier.generated.intelligence.v1 import collections_pb2, ingest_pb2

DEMO_COLLECTION = "demo"
DESCRIPTION = "A few pages about OpenTier itself (opentier up --demo)."
#: Sources of the demo documents start with this, so that they are told apart from the user's.
SOURCE_PREFIX = "opentier-demo/"
#: A question the demo answers, printed as a hint.
SAMPLE_QUESTION = "How do I stop OpenTier?"


@dataclass(frozen=True, slots=True)
class DemoDocument:
    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DemoResult:
    collection_id: str
    documents: int
    created: int
    updated: int
    unchanged: int
    failed: int


def documents() -> list[DemoDocument]:
    """The bundled pages, by file name."""
    folder = resources.files(__name__).joinpath("documents")
    found = [
        DemoDocument(entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".md")
    ]
    return sorted(found, key=lambda document: document.filename)


async def ingest_demo(settings: Settings, *, tenant_id: str, user_id: str) -> DemoResult:
    """Create collection ``demo`` when missing and ingest the pages into it; wait until done."""
    pages = documents()
    async with HostClient(settings, tenant=tenant_id, user=user_id) as client:
        collection = await _collection(client)
        call = client.open_stream(client.ingest.IngestStream, _records(client, collection.id, pages))
        try:
            job: ingest_pb2.IngestJob = await call
        except grpc.aio.AioRpcError as err:
            raise remote_error(err, client.target) from None
    if job.status != ingest_pb2.JOB_STATUS_SUCCEEDED:
        reason = job.error.message or ingest_pb2.JobStatus.Name(job.status)
        raise OpenTierError(f"the demo ingestion job {job.id} did not succeed: {reason}")
    counts = job.counts
    return DemoResult(
        collection_id=collection.id,
        documents=len(pages),
        created=counts.created,
        updated=counts.updated,
        unchanged=counts.unchanged,
        failed=counts.failed + counts.dropped,
    )


async def _collection(client: HostClient) -> collections_pb2.Collection:
    for collection in await client.all_collections():
        if collection.name == DEMO_COLLECTION:
            return collection
    request = collections_pb2.CreateCollectionRequest(
        caller=client.caller, name=DEMO_COLLECTION, description=DESCRIPTION
    )
    try:
        created: collections_pb2.Collection = await client.call(client.collections.CreateCollection, request)
    except AlreadyExistsError:  # made meanwhile, by another run or a user
        return await client.collection_named(DEMO_COLLECTION)
    return created


async def _records(
    client: HostClient, collection_id: str, pages: list[DemoDocument]
) -> AsyncIterator[ingest_pb2.IngestStreamRequest]:
    yield ingest_pb2.IngestStreamRequest(
        caller=client.caller, start=ingest_pb2.IngestStreamStart(collection_id=collection_id)
    )
    for page in pages:
        yield ingest_pb2.IngestStreamRequest(
            record=ingest_pb2.IngestRecord(
                source=SOURCE_PREFIX + page.filename,
                file=ingest_pb2.UploadedFile(
                    filename=page.filename, media_type="text/markdown", data=page.data
                ),
            )
        )
