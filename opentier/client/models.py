"""What the gateway answers, as typed, read-only objects (the shapes of ``/openapi.json``).

Fields the gateway adds later are kept (``model_extra``) rather than refused, so an older client keeps
working against a newer gateway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["read", "ingest", "chat", "admin"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DocumentStatus = Literal["pending", "processing", "ready", "failed", "dropped"]
MessageStatus = Literal["in_progress", "complete", "cancelled", "failed"]


class Model(BaseModel):
    """Base of the answers: immutable, and tolerant of fields it does not know."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Problem(Model):
    """Why something failed: a stable code and a message."""

    code: str
    message: str


class Span(Model):
    """Characters ``[char_start, char_end)`` of a document's cleaned text."""

    char_start: int
    char_end: int


# -- identity ---------------------------------------------------------------------------------------


class User(Model):
    id: str
    email: str
    display_name: str = ""
    role: str
    disabled: bool = False
    created_at: datetime | None = None
    last_login_at: datetime | None = None


class Tenant(Model):
    id: str
    name: str


class Me(Model):
    """Who a credential belongs to and what it may do."""

    user: User
    tenant: Tenant
    scopes: list[str]
    api_key_id: str | None = None


class ApiKey(Model):
    """An API key as listed; the key itself is only in :class:`NewApiKey`."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    owner_id: str
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    state: str = "active"


class NewApiKey(ApiKey):
    """A key just created: :attr:`key` is shown this once."""

    key: str


# -- collections, documents, jobs -------------------------------------------------------------------


class Collection(Model):
    id: str
    name: str
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedder: str = ""
    dimensions: int = 0
    document_count: int = 0
    chunk_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CollectionPage(Model):
    collections: list[Collection]
    next_page_token: str | None = None


class CollectionDeleted(Model):
    documents_deleted: int
    chunks_deleted: int


class Document(Model):
    id: str
    collection_id: str
    source: str
    title: str = ""
    media_type: str = ""
    status: DocumentStatus | None = None
    failed_stage: str | None = None
    error: Problem | None = None
    content_hash: str = ""
    version: int = 0
    size_bytes: int = 0
    chunk_count: int = 0
    page_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    indexed_at: datetime | None = None


class DocumentPage(Model):
    documents: list[Document]
    next_page_token: str | None = None


class DocumentDeleted(Model):
    chunks_deleted: int


class JobCounts(Model):
    documents_seen: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    dropped: int = 0
    failed: int = 0
    chunks_written: int = 0
    items_total: int = 0
    items_done: int = 0


class Job(Model):
    """An ingestion job; :attr:`finished` once its status can no longer change."""

    id: str
    collection_id: str
    status: JobStatus | None = None
    finished: bool = False
    source: str = ""
    counts: JobCounts = Field(default_factory=JobCounts)
    progress: float | None = Field(default=None, description="Share of the work done, 0 to 1.")
    error: Problem | None = None
    created_by: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class JobPage(Model):
    jobs: list[Job]
    next_page_token: str | None = None


# -- search -----------------------------------------------------------------------------------------


class SearchHit(Model):
    chunk_id: str
    document_id: str
    collection_id: str
    score: float
    source: str
    title: str = ""
    heading_path: list[str] = Field(default_factory=list)
    page: int | None = None
    text: str
    span: Span | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResults(Model):
    hits: list[SearchHit]
    retriever: str
    reranker: str | None = None


# -- conversations ----------------------------------------------------------------------------------


class Citation(Model):
    """Source ``[n]`` of an answer: the chunk given to the model and where it comes from."""

    source_number: int
    chunk_id: str
    document_id: str
    collection_id: str
    source: str
    title: str = ""
    page: int | None = None
    span: Span | None = None
    text: str = ""
    heading_path: list[str] = Field(default_factory=list)
    score: float = 0.0


class Usage(Model):
    input_tokens: int
    output_tokens: int
    llm: str = ""
    model: str = ""


class Timings(Model):
    time_to_first_token_ms: int | None = None
    total_ms: int = 0


class Conversation(Model):
    id: str
    title: str = ""
    user_id: str = ""
    collection_ids: list[str] = Field(default_factory=list)
    message_count: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Message(Model):
    id: str
    role: str | None = None
    content: str = ""
    status: MessageStatus | None = None
    citations: list[Citation] = Field(default_factory=list)
    sources: list[Citation] = Field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    error: Problem | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    timings: Timings | None = None


class ConversationPage(Model):
    conversations: list[Conversation]
    next_page_token: str | None = None


class ConversationWithMessages(Model):
    conversation: Conversation
    messages: list[Message]


class ConversationDeleted(Model):
    messages_deleted: int
