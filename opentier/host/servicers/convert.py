"""Proto messages ↔ engine dataclasses, in one place so that the servicers stay thin.

Status and stage names of the engine and the ledger (``skipped``, ``embed``...) become the
contract's enums here and nowhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from opentier.components import SearchHit, SearchQuery
from opentier.db.tenancy import INTERNAL, enter_tenant
from opentier.engine.collections import CollectionInfo
from opentier.engine.documents import DocumentInfo
from opentier.engine.jobs import ItemSpec, JobCounts, JobInfo, JobOptions
from opentier.engine.pipeline import Progress
from opentier.errors import InvalidRequestError, SourceTooLargeError
from opentier.generated.intelligence.v1 import (
    collections_pb2,
    common_pb2,
    documents_pb2,
    ingest_pb2,
    search_pb2,
)

# -- caller ---------------------------------------------------------------------------------------


def tenant_of(caller: common_pb2.Caller) -> str:
    """The caller's tenant; every data call is scoped by it, so an empty one is refused.

    The call acts for it from here on: its transactions see this tenant's rows only (row-level security,
    see :mod:`opentier.db.tenancy`). Each gRPC call runs in a task of its own, so the scope ends with it.
    """
    tenant = caller.tenant_id.strip()
    if not tenant:
        raise InvalidRequestError("caller.tenant_id is empty: every call must name its tenant")
    if tenant == INTERNAL:
        raise InvalidRequestError(f"caller.tenant_id {INTERNAL!r} is not a tenant")
    enter_tenant(tenant)
    return tenant


def user_of(caller: common_pb2.Caller) -> str | None:
    return caller.user_id or None


# -- shared ---------------------------------------------------------------------------------------


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def struct_of(data: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if data:
        json_format.ParseDict(data, struct)
    return struct


def dict_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(struct)
    return data


def error(code: str | None, message: str | None) -> common_pb2.ErrorInfo | None:
    if not code and not message:
        return None
    return common_pb2.ErrorInfo(code=code or "", message=message or "", retryable=False)


# -- collections ----------------------------------------------------------------------------------


def collection_pb(info: CollectionInfo) -> collections_pb2.Collection:
    return collections_pb2.Collection(
        id=str(info.id),
        name=info.name,
        description=info.description or "",
        metadata=struct_of(info.metadata),
        embedder=info.embedder,
        dimensions=info.dimensions,
        document_count=info.document_count,
        chunk_count=info.chunk_count,
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
    )


# -- documents ------------------------------------------------------------------------------------

DOCUMENT_STATUS: dict[str, documents_pb2.DocumentStatus.ValueType] = {
    "pending": documents_pb2.DOCUMENT_STATUS_PENDING,
    "processing": documents_pb2.DOCUMENT_STATUS_PROCESSING,
    "ready": documents_pb2.DOCUMENT_STATUS_READY,
    "failed": documents_pb2.DOCUMENT_STATUS_FAILED,
    "skipped": documents_pb2.DOCUMENT_STATUS_DROPPED,
}
DOCUMENT_STATUS_NAME = {value: name for name, value in DOCUMENT_STATUS.items()}

#: Ledger stages (``documents.error_stage``) and progress stages, both spellings.
STAGE: dict[str, documents_pb2.IngestStage.ValueType] = {
    "queued": documents_pb2.INGEST_STAGE_QUEUED,
    "load": documents_pb2.INGEST_STAGE_LOADING,
    "loading": documents_pb2.INGEST_STAGE_LOADING,
    "clean": documents_pb2.INGEST_STAGE_CLEANING,
    "cleaning": documents_pb2.INGEST_STAGE_CLEANING,
    "chunk": documents_pb2.INGEST_STAGE_CHUNKING,
    "chunking": documents_pb2.INGEST_STAGE_CHUNKING,
    "embed": documents_pb2.INGEST_STAGE_EMBEDDING,
    "embedding": documents_pb2.INGEST_STAGE_EMBEDDING,
    "store": documents_pb2.INGEST_STAGE_STORING,
    "storing": documents_pb2.INGEST_STAGE_STORING,
    "done": documents_pb2.INGEST_STAGE_DONE,
}


def stage_pb(stage: str | None) -> documents_pb2.IngestStage.ValueType:
    return STAGE.get(stage or "", documents_pb2.INGEST_STAGE_UNSPECIFIED)


def document_statuses(values: Any) -> list[str]:
    """The ledger statuses a ListDocuments filter names (UNSPECIFIED is refused)."""
    found = []
    for value in values:
        if value not in DOCUMENT_STATUS_NAME:
            raise InvalidRequestError(f"statuses: {value} is not a document status to filter by")
        found.append(DOCUMENT_STATUS_NAME[value])
    return found


def document_pb(info: DocumentInfo) -> documents_pb2.Document:
    status = DOCUMENT_STATUS.get(info.status, documents_pb2.DOCUMENT_STATUS_UNSPECIFIED)
    failed = info.status == "failed"
    dropped = info.status == "skipped"
    problem = None
    if (failed or dropped) and info.error_message:
        problem = error("dropped" if dropped else "document_failed", info.error_message)
    return documents_pb2.Document(
        id=str(info.id),
        collection_id=str(info.collection_id),
        source=info.source,
        title=info.title or "",
        media_type=info.media_type or "",
        status=status,
        failed_stage=stage_pb(info.error_stage) if failed else documents_pb2.INGEST_STAGE_UNSPECIFIED,
        error=problem,
        content_hash=info.content_hash or "",
        version=info.version,
        size_bytes=info.size_bytes or 0,
        chunk_count=info.chunk_count,
        page_count=info.page_count,
        metadata=struct_of(info.metadata),
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
        indexed_at=timestamp(info.indexed_at),
    )


# -- ingestion ------------------------------------------------------------------------------------

JOB_STATUS: dict[str, ingest_pb2.JobStatus.ValueType] = {
    "queued": ingest_pb2.JOB_STATUS_QUEUED,
    "running": ingest_pb2.JOB_STATUS_RUNNING,
    "succeeded": ingest_pb2.JOB_STATUS_SUCCEEDED,
    "failed": ingest_pb2.JOB_STATUS_FAILED,
    "cancelled": ingest_pb2.JOB_STATUS_CANCELLED,
}
JOB_STATUS_NAME = {value: name for name, value in JOB_STATUS.items()}

PROGRESS_STATUS: dict[str, ingest_pb2.IngestDocumentStatus.ValueType] = {
    "in_progress": ingest_pb2.INGEST_DOCUMENT_STATUS_IN_PROGRESS,
    "created": ingest_pb2.INGEST_DOCUMENT_STATUS_CREATED,
    "updated": ingest_pb2.INGEST_DOCUMENT_STATUS_UPDATED,
    "unchanged": ingest_pb2.INGEST_DOCUMENT_STATUS_UNCHANGED,
    "deleted": ingest_pb2.INGEST_DOCUMENT_STATUS_DELETED,
    "dropped": ingest_pb2.INGEST_DOCUMENT_STATUS_DROPPED,
    "failed": ingest_pb2.INGEST_DOCUMENT_STATUS_FAILED,
}


def job_statuses(values: Any) -> list[str]:
    """The job statuses a ListJobs filter names (UNSPECIFIED is refused)."""
    found = []
    for value in values:
        if value not in JOB_STATUS_NAME:
            raise InvalidRequestError(f"statuses: {value} is not a job status to filter by")
        found.append(JOB_STATUS_NAME[value])
    return found


def options_of(options: ingest_pb2.IngestOptions) -> JobOptions:
    return JobOptions(
        include=tuple(options.include),
        exclude=tuple(options.exclude),
        recursive=options.recursive if options.HasField("recursive") else True,
        force=options.force,
        delete_missing=options.delete_missing,
        loader=options.loader or None,
        cleaners=tuple(options.cleaners),
        metadata=dict_of(options.metadata),
    )


def options_pb(options: JobOptions) -> ingest_pb2.IngestOptions:
    return ingest_pb2.IngestOptions(
        include=list(options.include),
        exclude=list(options.exclude),
        recursive=options.recursive,
        force=options.force,
        delete_missing=options.delete_missing,
        loader=options.loader or "",
        cleaners=list(options.cleaners),
        metadata=struct_of(options.metadata),
    )


def counts_pb(counts: JobCounts) -> ingest_pb2.IngestCounts:
    return ingest_pb2.IngestCounts(
        documents_seen=counts.documents_seen,
        created=counts.created,
        updated=counts.updated,
        unchanged=counts.unchanged,
        deleted=counts.deleted,
        dropped=counts.dropped,
        failed=counts.failed,
        chunks_written=counts.chunks_written,
        items_total=counts.items_total,
        items_done=counts.items_done,
    )


def job_source(source: dict[str, Any]) -> str:
    """The job's source as the contract shows it: a filename, path, URL or ``stream``."""
    if "stream" in source:
        return "stream"
    for key in ("file", "path", "url"):
        value = source.get(key)
        if isinstance(value, str):
            return value
    return ""


def job_pb(job: JobInfo) -> ingest_pb2.IngestJob:
    return ingest_pb2.IngestJob(
        id=str(job.id),
        collection_id=str(job.collection_id),
        status=JOB_STATUS.get(job.status, ingest_pb2.JOB_STATUS_UNSPECIFIED),
        source=job_source(job.source),
        options=options_pb(job.options),
        counts=counts_pb(job.counts),
        error=error(job.error_code, job.error) if job.error_code else None,
        created_by=job.created_by or "",
        created_at=timestamp(job.created_at),
        started_at=timestamp(job.started_at),
        finished_at=timestamp(job.finished_at),
    )


def progress_pb(event: Progress) -> ingest_pb2.IngestProgress:
    problem = None
    if event.status in {"failed", "dropped"}:
        problem = error(event.error_code or event.status, event.error_message)
    return ingest_pb2.IngestProgress(
        job_id=str(event.job_id),
        document_id=str(event.document_id) if event.document_id else "",
        source=event.source,
        stage=stage_pb(event.stage),
        status=PROGRESS_STATUS.get(event.status, ingest_pb2.INGEST_DOCUMENT_STATUS_UNSPECIFIED),
        error=problem,
        chunk_count=event.chunk_count,
        size_bytes=event.size_bytes or 0,
    )


# -- work items -----------------------------------------------------------------------------------


def upload_item(upload: ingest_pb2.UploadedFile, source: str, limit: int) -> ItemSpec:
    """An uploaded file as a work item; refused beyond ``limit`` (ingestion.max_upload_bytes)."""
    if not source:
        raise InvalidRequestError("an uploaded file needs a filename: it becomes the document's source")
    if len(upload.data) > limit:
        raise SourceTooLargeError(
            f"{source} has {len(upload.data)} bytes, more than this host accepts "
            f"(ingestion.max_upload_bytes = {limit})"
        )
    details: dict[str, Any] = {"filename": upload.filename or source}
    if upload.media_type:
        details["media_type"] = upload.media_type
    return ItemSpec("file", source, payload=upload.data, details=details)


def record_item(record: ingest_pb2.IngestRecord, limit: int) -> ItemSpec:
    """A streamed record as a work item: text, an uploaded file, or the removal of a source."""
    content = record.WhichOneof("content")
    source = record.source.strip()
    if content == "file":
        item = upload_item(record.file, source or record.file.filename.strip(), limit)
        return ItemSpec(item.kind, item.source, item.payload, {**item.details, **_record_details(record)})
    if not source:
        raise InvalidRequestError("a record needs a source: it identifies the document in its collection")
    if content == "remove":
        if not record.remove:
            raise InvalidRequestError(f"record {source}: remove must be true when set")
        return ItemSpec("remove", source)
    if content == "text":
        data = record.text.encode("utf-8")
        if len(data) > limit:
            raise SourceTooLargeError(
                f"record {source} has {len(data)} bytes of text, more than this host accepts "
                f"(ingestion.max_upload_bytes = {limit})"
            )
        return ItemSpec("text", source, payload=data, details=_record_details(record))
    raise InvalidRequestError(f"record {source}: set its content (text, file or remove)")


def _record_details(record: ingest_pb2.IngestRecord) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if record.title:
        details["title"] = record.title
    if record.HasField("metadata"):
        details["metadata"] = dict_of(record.metadata)
    return details


# -- search ---------------------------------------------------------------------------------------


def search_query(request: search_pb2.SearchRequest, tenant_id: str) -> SearchQuery:
    """The engine's query for a SearchRequest; ``top_k`` 0 stays 0 (the configured default)."""
    return SearchQuery(
        text=request.query,
        tenant_id=tenant_id,
        collection_ids=list(request.collection_ids),
        top_k=request.top_k,
        filters=dict_of(request.filters) if request.HasField("filters") else None,
        options=dict_of(request.options) if request.HasField("options") else {},
    )


def search_hit_pb(hit: SearchHit) -> search_pb2.SearchHit:
    span = None
    if hit.char_start is not None and hit.char_end is not None:
        span = common_pb2.TextSpan(char_start=hit.char_start, char_end=hit.char_end)
    return search_pb2.SearchHit(
        chunk_id=hit.chunk_id,
        document_id=hit.document_id,
        collection_id=hit.collection_id,
        score=hit.score,
        source=hit.source,
        title=hit.title or "",
        heading_path=list(hit.heading_path),
        page=hit.page,
        text=hit.text,
        span=span,
        metadata=struct_of(dict(hit.metadata)),
    )
