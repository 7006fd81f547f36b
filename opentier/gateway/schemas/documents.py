"""Documents: what ingestion stored in a collection, one per source, with its processing status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from opentier.gateway.schemas.common import PageQuery, Problem, dict_of, problem_of, time_of
from opentier.generated.intelligence.v1 import documents_pb2

DocumentStatus = Literal["pending", "processing", "ready", "failed", "dropped"]
Stage = Literal["queued", "loading", "cleaning", "chunking", "embedding", "storing", "done"]

DOCUMENT_STATUS: dict[DocumentStatus, documents_pb2.DocumentStatus.ValueType] = {
    "pending": documents_pb2.DOCUMENT_STATUS_PENDING,
    "processing": documents_pb2.DOCUMENT_STATUS_PROCESSING,
    "ready": documents_pb2.DOCUMENT_STATUS_READY,
    "failed": documents_pb2.DOCUMENT_STATUS_FAILED,
    "dropped": documents_pb2.DOCUMENT_STATUS_DROPPED,
}
_STATUS_NAME = {value: name for name, value in DOCUMENT_STATUS.items()}
STAGE: dict[documents_pb2.IngestStage.ValueType, Stage] = {
    documents_pb2.INGEST_STAGE_QUEUED: "queued",
    documents_pb2.INGEST_STAGE_LOADING: "loading",
    documents_pb2.INGEST_STAGE_CLEANING: "cleaning",
    documents_pb2.INGEST_STAGE_CHUNKING: "chunking",
    documents_pb2.INGEST_STAGE_EMBEDDING: "embedding",
    documents_pb2.INGEST_STAGE_STORING: "storing",
    documents_pb2.INGEST_STAGE_DONE: "done",
}


def split_list(value: Any) -> Any:
    """``a,b`` or repeated ``?x=a&x=b`` → ``["a", "b"]`` (query strings carry lists either way)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
    return value


class DocumentListQuery(PageQuery):
    status: list[DocumentStatus] | None = Field(
        default=None, description="Only documents in these statuses (comma-separated or repeated)."
    )

    _split = field_validator("status", mode="before")(split_list)


class Document(BaseModel):
    id: str
    collection_id: str
    source: str = Field(description="Identity inside the collection: a path, a URL or an upload's name.")
    title: str
    media_type: str
    status: DocumentStatus | None = Field(description="`ready` once its chunks are searchable.")
    failed_stage: Stage | None = Field(description="The step that failed, when `status` is `failed`.")
    error: Problem | None = Field(description="Why it failed or was dropped.")
    content_hash: str
    version: int = Field(description="Incremented each time a changed version replaced the chunks.")
    size_bytes: int
    chunk_count: int
    page_count: int | None
    metadata: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None
    indexed_at: datetime | None = Field(description="When the current version became searchable.")

    @classmethod
    def from_pb(cls, message: documents_pb2.Document) -> Document:
        return cls(
            id=message.id,
            collection_id=message.collection_id,
            source=message.source,
            title=message.title,
            media_type=message.media_type,
            status=_STATUS_NAME.get(message.status),
            failed_stage=STAGE.get(message.failed_stage),
            error=problem_of(message),
            content_hash=message.content_hash,
            version=message.version,
            size_bytes=message.size_bytes,
            chunk_count=message.chunk_count,
            page_count=message.page_count if message.HasField("page_count") else None,
            metadata=dict_of(message.metadata),
            created_at=time_of(message, "created_at"),
            updated_at=time_of(message, "updated_at"),
            indexed_at=time_of(message, "indexed_at"),
        )


class DocumentList(BaseModel):
    documents: list[Document] = Field(description="Ordered by source.")
    next_page_token: str | None = Field(
        description="Pass as `page_token` for the next page; null on the last."
    )


class DocumentDeleted(BaseModel):
    chunks_deleted: int


class IngestOptions(BaseModel):
    """How to ingest a source."""

    metadata: dict[str, Any] | None = Field(
        default=None, description="Merged into the document's metadata (searchable with filters)."
    )
    force: bool = Field(default=False, description="Process again even when the content is unchanged.")
    loader: str | None = Field(
        default=None, max_length=200, description="Loader component; default: picked by media type."
    )


class UrlIngest(IngestOptions):
    url: str = Field(min_length=8, max_length=8192, description="An http(s) URL the host fetches.")


class UploadForm(BaseModel):
    """`multipart/form-data`: one file part named `file`; the other parts are optional."""

    file: bytes = Field(
        json_schema_extra={"format": "binary"}, description="The document; its file name becomes its source."
    )
    metadata: str | None = Field(default=None, description="A JSON object merged into the metadata.")
    force: bool = Field(default=False, description="Process again even when the content is unchanged.")
    loader: str | None = Field(default=None, description="Loader component; default: by media type.")
