"""Search: retrieval without generation, the same retrieval chat uses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from opentier.gateway.schemas.common import Span, dict_of
from opentier.generated.intelligence.v1 import search_pb2


class SearchQuery(BaseModel):
    query: str = Field(min_length=1, max_length=10_000)
    collection_ids: list[str] = Field(
        default_factory=list, max_length=100, description="Collections to search; empty: all of yours."
    )
    retriever: str | None = Field(
        default=None, max_length=200, description="Retriever component (`hybrid`, `vector`, `fulltext`...)."
    )
    top_k: int | None = Field(default=None, ge=1, le=1000, description="Most hits (clamped by the server).")
    filters: dict[str, Any] | None = Field(
        default=None,
        description='Metadata filter: `{"key": value}`, `{"key": [a, b]}`, operator objects '
        '`{"key": {"eq"|"in"|"range"|"exists": ...}}`, `{"and"|"or": [...]}`.',
    )
    reranker: str | None = Field(
        default=None, max_length=200, description="Reranker component; `none` turns the configured one off."
    )
    options: dict[str, Any] | None = Field(
        default=None, description="Retriever- and reranker-specific options."
    )


class SearchHit(BaseModel):
    """One retrieved chunk, with what a citation needs: document, source, title, page, span."""

    chunk_id: str
    document_id: str
    collection_id: str
    score: float = Field(description="Higher is better; comparable within one response only.")
    source: str
    title: str
    heading_path: list[str] = Field(description="Headings above the chunk, outermost first.")
    page: int | None = Field(description="1-based page of the chunk's start, for paged formats.")
    text: str
    span: Span | None = Field(description="Where the text lies in the document's cleaned text.")
    metadata: dict[str, Any]

    @classmethod
    def from_pb(cls, hit: search_pb2.SearchHit) -> SearchHit:
        return cls(
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            collection_id=hit.collection_id,
            score=hit.score,
            source=hit.source,
            title=hit.title,
            heading_path=list(hit.heading_path),
            page=hit.page if hit.HasField("page") else None,
            text=hit.text,
            span=Span.from_pb(hit.span) if hit.HasField("span") else None,
            metadata=dict_of(hit.metadata),
        )


class SearchResults(BaseModel):
    hits: list[SearchHit] = Field(description="Best first.")
    retriever: str = Field(description="The retriever that answered.")
    reranker: str | None = Field(description="The reranker that reordered the hits, if any.")

    @classmethod
    def from_pb(cls, response: search_pb2.SearchResponse) -> SearchResults:
        return cls(
            hits=[SearchHit.from_pb(hit) for hit in response.hits],
            retriever=response.retriever,
            reranker=response.reranker or None,
        )
