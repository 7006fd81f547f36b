"""Documents: upload (multipart) or fetch by URL into a collection, list with status, get, delete.

An upload or a fetch answers 202 with the ingestion job as soon as the host accepted it; the job, and
each document's ``status``, show when it is searchable. Adding and deleting documents need the
``ingest`` scope, reading them ``read``.
"""

from __future__ import annotations

from quart import Blueprint, request
from quart_schema import (
    DataSource,
    document_request,
    tag,
    validate_querystring,
    validate_request,
    validate_response,
)

from opentier.errors import HostUnavailableError, InvalidRequestError
from opentier.gateway import rpc
from opentier.gateway.errors import documented_errors
from opentier.gateway.principal import require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.common import next_token, struct_of
from opentier.gateway.schemas.documents import (
    DOCUMENT_STATUS,
    Document,
    DocumentDeleted,
    DocumentList,
    DocumentListQuery,
    UploadForm,
    UrlIngest,
)
from opentier.gateway.schemas.jobs import Job, JobAccepted
from opentier.gateway.state import gateway_state
from opentier.gateway.uploads import ENVELOPE_LIMIT, read_upload, too_large
from opentier.generated.intelligence.v1 import documents_pb2, ingest_pb2

blueprint = Blueprint("documents", __name__, url_prefix="/v1")
TAGS = ["Documents"]


def _options(loader: str | None, force: bool, metadata: dict[str, object] | None) -> ingest_pb2.IngestOptions:
    return ingest_pb2.IngestOptions(loader=loader or "", force=force, metadata=struct_of(metadata))


async def _start(ingest: ingest_pb2.IngestRequest) -> JobAccepted:
    """Send ``ingest`` to the host and answer with its job once created; the job goes on without us."""
    events = host_client().stream(rpc.INGEST, ingest, caller())
    try:
        async for event in events:
            if event.WhichOneof("event") in {"started", "summary"}:
                job = event.started if event.HasField("started") else event.summary
                return JobAccepted(job=Job.from_pb(job))
    finally:
        await events.aclose()
    raise HostUnavailableError("the host ended the ingestion without creating a job; try again")


@blueprint.post("/collections/<collection_id>/documents")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 413, 500, 503)
@document_request(UploadForm, source=DataSource.FORM_MULTIPART)
@validate_response(JobAccepted, 202)
async def upload_document(collection_id: str) -> tuple[JobAccepted, int]:
    """Upload a document into a collection (scope `ingest`); 202 with its ingestion job.

    Send `multipart/form-data` with the file in a part named `file` (its file name becomes the
    document's source: uploading the same name again replaces the document when its content changed).
    Larger than the configured limit: 413 `upload_too_large`, sent as soon as the limit is passed.
    """
    limit = gateway_state().settings.gateway.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + ENVELOPE_LIMIT:
        raise too_large(limit)
    upload = await read_upload(request.body, request.headers.get("Content-Type"), limit)
    ingest = ingest_pb2.IngestRequest(
        collection_id=collection_id,
        file=ingest_pb2.UploadedFile(
            filename=upload.filename, media_type=upload.media_type, data=upload.data
        ),
        options=_options(upload.fields.get("loader"), upload.flag("force"), upload.metadata()),
    )
    return await _start(ingest), 202


@blueprint.post("/collections/<collection_id>/documents/url")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 413, 500, 503)
@validate_request(UrlIngest)
@validate_response(JobAccepted, 202)
async def ingest_url(collection_id: str, data: UrlIngest) -> tuple[JobAccepted, int]:
    """Have the host fetch a document from an http(s) URL into a collection (scope `ingest`).

    Private and loopback addresses are refused unless the host allows them (`source_refused`).
    """
    if not data.url.lower().startswith(("http://", "https://")):
        raise InvalidRequestError("the url must start with http:// or https://")
    ingest = ingest_pb2.IngestRequest(
        collection_id=collection_id, url=data.url, options=_options(data.loader, data.force, data.metadata)
    )
    return await _start(ingest), 202


@blueprint.get("/collections/<collection_id>/documents")
@require("read")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_querystring(DocumentListQuery)
@validate_response(DocumentList)
async def list_documents(collection_id: str, query_args: DocumentListQuery) -> DocumentList:
    """List a collection's documents with their status, by source, a page at a time (scope `read`)."""
    message = documents_pb2.ListDocumentsRequest(
        collection_id=collection_id,
        page=query_args.to_pb(),
        statuses=[DOCUMENT_STATUS[status] for status in query_args.status or ()],
    )
    response = await host_client().unary(rpc.LIST_DOCUMENTS, message, caller())
    return DocumentList(
        documents=[Document.from_pb(item) for item in response.documents],
        next_page_token=next_token(response.page),
    )


@blueprint.get("/documents/<document_id>")
@require("read")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(Document)
async def get_document(document_id: str) -> Document:
    """One document: its status, the stage and reason of a failure, its size and chunks (scope `read`)."""
    message = documents_pb2.GetDocumentRequest(document_id=document_id)
    return Document.from_pb(await host_client().unary(rpc.GET_DOCUMENT, message, caller()))


@blueprint.delete("/documents/<document_id>")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(DocumentDeleted)
async def delete_document(document_id: str) -> DocumentDeleted:
    """Delete a document and its chunks; they leave search results at once (scope `ingest`)."""
    message = documents_pb2.DeleteDocumentRequest(document_id=document_id)
    response = await host_client().unary(rpc.DELETE_DOCUMENT, message, caller())
    return DocumentDeleted(chunks_deleted=response.chunks_deleted)
