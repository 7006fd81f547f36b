"""What a retriever or reranker plugin is given: the scope of one search and the means to run it.

The host resolves a search request into a :class:`RetrievalContext` before it calls a retriever: the
tenant's collections that the request may read (never another tenant's), the compiled metadata
filter, the database engine, the retrieval settings and a lazily computed query embedding. A
retriever must restrict every query it runs to ``context.scope_sql(alias)``; that is what keeps one
tenant's chunks out of another tenant's results.

Built-in retrievers (``plugins/retrievers/``) are ordinary plugins written against this module only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from opentier.components import Retriever
    from opentier.config import RetrievalSettings


@dataclass(frozen=True, slots=True)
class ScopedCollection:
    """One collection a search may read, with what retrievers need to query it."""

    id: str
    name: str
    #: PostgreSQL text search configuration of the collection (``english``, ``simple``...).
    language: str
    embedder: str
    embedder_version: str
    dimensions: int


@dataclass(frozen=True, slots=True)
class SqlFragment:
    """A parameterised SQL condition: ``sql`` names its bind parameters, ``params`` holds their values.

    Parameter names are unique to the fragment (prefixed), so fragments can be combined freely.
    """

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def true() -> SqlFragment:
        return SqlFragment("TRUE")


class RetrievalContext(ABC):
    """The resolved scope of one search, handed to :meth:`Retriever.retrieve` and to rerankers."""

    #: The host's database engine (schema ``intelligence``).
    engine: AsyncEngine
    settings: RetrievalSettings
    tenant_id: str
    #: Collections the search reads: at least one, all of ``tenant_id``, all with one embedder.
    collections: Sequence[ScopedCollection]

    @abstractmethod
    def scope_sql(self, alias: str) -> SqlFragment:
        """Condition on the chunks table aliased ``alias``: tenant, collections and metadata filter.

        Every query a retriever runs on ``intelligence.chunks`` must include it.
        """

    @abstractmethod
    async def query_embedding(self) -> Sequence[float]:
        """The query's embedding by the collections' embedder (computed once, then cached)."""

    @abstractmethod
    def retriever(self, name: str) -> Retriever:
        """Another registered retriever (a fusion retriever calls its parts through this)."""
