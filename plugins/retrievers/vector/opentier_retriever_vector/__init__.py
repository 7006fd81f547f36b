"""The ``vector`` retriever: the chunks nearest to the query embedding, by cosine distance.

One statement on pgvector's HNSW index for the collections' embedding dimension. The scope (tenant,
collections, metadata filter) is part of that statement, and pgvector's iterative index scan
(``hnsw.iterative_scan``) keeps reading the index until ``k`` chunks pass it, so a selective filter
or a small collection inside a big table still gets its ``k`` hits. Score = 1 - cosine distance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from opentier import hookimpl
from opentier.components import Retriever, SearchHit, SearchQuery
from opentier.config import RetrievalSettings
from opentier.db.vector_index import distance_sql
from opentier.retrieval import RetrievalContext

#: Alias of ``intelligence.chunks`` in the statement (what ``scope_sql`` is asked for).
ALIAS = "c"


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: Mapping[str, Any]


def scan_settings(settings: RetrievalSettings, k: int) -> dict[str, str]:
    """pgvector's ``hnsw.*`` settings for one search: ef_search at least ``k``, iterative scans."""
    return {
        "ef_search": str(min(max(settings.ef_search, k), 1000)),
        "iterative_scan": settings.iterative_scan,
        "max_scan_tuples": str(settings.max_scan_tuples),
    }


def nearest(context: RetrievalContext, embedding: Sequence[float], k: int) -> Statement:
    """The statement that finds the ``k`` nearest chunks in scope, with their cosine distance.

    ``embedding_dims`` is written as a literal, never bound: PostgreSQL proves that the partial
    HNSW index of that dimension applies only from a constant (and a prepared statement's generic
    plan would otherwise lose the index).
    """
    dims = int(context.collections[0].dimensions)
    distance = distance_sql(dims, "query_vector").replace("embedding", f"{ALIAS}.embedding", 1)
    scope = context.scope_sql(ALIAS)
    sql = (
        f"SELECT {ALIAS}.id, {ALIAS}.document_id, {distance} AS distance FROM intelligence.chunks {ALIAS} "
        f"WHERE {ALIAS}.embedding_dims = {dims} AND {scope.sql} "
        f"ORDER BY {distance} LIMIT :k"
    )
    vector = "[" + ",".join(f"{float(v):.9g}" for v in embedding) + "]"
    return Statement(sql, {**scope.params, "query_vector": vector, "k": k})


class VectorRetriever(Retriever):
    name = "vector"
    description = "Nearest chunks by cosine similarity of embeddings (pgvector HNSW)."

    async def retrieve(self, query: SearchQuery, context: RetrievalContext) -> Sequence[SearchHit]:
        if query.top_k < 1:
            return []
        embedding = await context.query_embedding()
        statement = nearest(context, embedding, query.top_k)
        settings = scan_settings(context.settings, query.top_k)
        async with context.engine.begin() as conn:
            # set_config(name, value, true) is SET LOCAL: it ends with this transaction, so the pooled
            # connection goes back as it was.
            await conn.execute(_SET_LOCAL, settings)
            rows = (await conn.execute(sa.text(statement.sql), dict(statement.params))).all()
        # relaxed_order may return neighbours slightly out of order; equal scores go by chunk id.
        ranked = sorted(
            ((1.0 - float(distance), str(key), str(document)) for key, document, distance in rows),
            key=_best_first,
        )
        return [SearchHit(chunk_id=key, score=score, document_id=document) for score, key, document in ranked]


_SET_LOCAL = sa.text(
    "SELECT set_config('hnsw.ef_search', :ef_search, true), "
    "set_config('hnsw.iterative_scan', :iterative_scan, true), "
    "set_config('hnsw.max_scan_tuples', :max_scan_tuples, true)"
)


def _best_first(row: tuple[float, str, str]) -> tuple[float, str]:
    return -row[0], row[1]


@hookimpl
def register_retrievers(register: Callable[[Retriever], None]) -> None:
    register(VectorRetriever())
