"""The ``hybrid`` retriever: reciprocal rank fusion (RRF) of other retrievers, run concurrently.

Each part (``vector`` and ``fulltext`` by default: ``retrieval.hybrid_weights``) returns its best
``retrieval.hybrid_depth`` chunks; a chunk's fused score is the sum over the parts that found it of
``weight / (rrf_k + rank)``, rank counted from 1. Only ranks matter, so parts whose scores live on
different scales (cosine similarity, BM25) combine without calibration, and a chunk that only one
part finds still ranks. Equal scores go to the chunk with the better best rank, then to the one the
earlier part (in ``hybrid_weights`` order: ``vector`` first by default) ranked better, then the
smaller id, so the order never depends on timing, and hardly ever on ids.

A part that found another chunk of the same document lends a chunk its rank, ranks count documents,
and a document's best chunk carries the document's fused score (see :func:`fuse`; option
``by_document``, true by default): the documents come out in the order RRF over documents gives.

A request may override the parts for itself with options ``{"weights": {"vector": 2, "fulltext":
1}, "depth": 50, "by_document": false}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from opentier import hookimpl
from opentier.components import Retriever, SearchHit, SearchQuery
from opentier.errors import InvalidRequestError, UnknownComponentError
from opentier.retrieval import RetrievalContext

#: Deepest a part may look, whatever the options say.
MAX_DEPTH = 1000


def fuse(
    rankings: Sequence[tuple[float, Sequence[SearchHit]]],
    k: int,
    documents: Mapping[str, str] | None = None,
) -> list[SearchHit]:
    """Reciprocal rank fusion of ``(weight, hits best first)`` rankings, best first.

    With ``documents`` (chunk id → document id; an empty mapping uses the hits' own document ids), a
    part that did not find a chunk but found another chunk of the same document lends it that chunk's
    rank: the part found the document. Without it, two retrievers that each find a different passage
    of the right document (the question's words in one, its meaning in another) would each vote for a
    different chunk, and the document would miss the fusion that RRF exists for. Ranks are then
    counted among documents: a chunk's rank is one more than the number of other documents ranked
    above it plus its own document's chunks above it, so a document that comes second is ranked 2
    however many chunks of the first came before it (the document's best chunk gets the rank RRF over
    documents would give it).
    """
    by_document = documents is not None
    documents = documents or {}
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    found: dict[str, SearchHit] = {}
    ranked: list[tuple[float, dict[str, int], dict[str, int]]] = []
    for weight, hits in rankings:
        chunk_ranks: dict[str, int] = {}
        document_ranks: dict[str, int] = {}
        chunks_of: dict[str, int] = {}  # chunks of each document ranked so far
        for hit in hits:
            if hit.chunk_id in chunk_ranks:  # a part that repeats a chunk gets credit for its best rank
                continue
            document = (documents.get(hit.chunk_id) or hit.document_id) if by_document else ""
            if document:
                # Rank among documents: the other chunks of a document ranked above do not push
                # another document down; the document's own earlier chunks do push this one down.
                own = chunks_of.get(document, 0)
                rank = len(document_ranks) - (1 if own else 0) + own + 1
                chunks_of[document] = own + 1
            else:
                rank = len(chunk_ranks) + 1
            chunk_ranks[hit.chunk_id] = rank
            if document:
                document_ranks.setdefault(document, rank)
            best_rank[hit.chunk_id] = min(best_rank.get(hit.chunk_id, rank), rank)
            if hit.chunk_id not in found or (hit.text and not found[hit.chunk_id].text):
                found[hit.chunk_id] = hit
        ranked.append((weight, chunk_ranks, document_ranks))
    part_ranks: dict[str, tuple[float, ...]] = {}
    for chunk_id, hit in found.items():
        document = (documents.get(chunk_id) or hit.document_id) if by_document else ""
        score = 0.0
        ranks: list[float] = []
        for weight, chunk_ranks, document_ranks in ranked:
            lent = chunk_ranks.get(chunk_id) or (document_ranks.get(document) if document else None)
            if lent is not None:
                score += weight / (k + lent)
            ranks.append(math.inf if lent is None else lent)
        scores[chunk_id] = score
        part_ranks[chunk_id] = tuple(ranks)
    if by_document:
        _carry_document_scores(
            scores, best_rank=best_rank, found=found, documents=documents, ranked=ranked, k=k
        )
    order = sorted(scores, key=lambda key: (-scores[key], best_rank[key], part_ranks[key], key))
    return [dataclasses.replace(found[key], score=scores[key]) for key in order]


def _carry_document_scores(
    scores: dict[str, float],
    *,
    best_rank: Mapping[str, int],
    found: Mapping[str, SearchHit],
    documents: Mapping[str, str],
    ranked: Sequence[tuple[float, Mapping[str, int], Mapping[str, int]]],
    k: int,
) -> None:
    """Give each document's best chunk the document's own fused score.

    Two parts may each rank a different chunk of a document first; then no single chunk holds both
    of the document's ranks (each also holds the other part's worse rank of itself, when that part
    found it lower down). The document's best chunk takes the score RRF over documents gives the
    document, so documents rank as document-level fusion ranks them; its other chunks keep theirs.
    """
    best: dict[str, str] = {}
    for chunk_id, hit in found.items():
        document = documents.get(chunk_id) or hit.document_id
        if not document:
            continue
        current = best.get(document)
        if current is None or (-scores[chunk_id], best_rank[chunk_id], chunk_id) < (
            -scores[current],
            best_rank[current],
            current,
        ):
            best[document] = chunk_id
    for document, chunk_id in best.items():
        whole = sum(
            weight / (k + document_ranks[document])
            for weight, _chunk_ranks, document_ranks in ranked
            if document in document_ranks
        )
        scores[chunk_id] = max(scores[chunk_id], whole)


class HybridRetriever(Retriever):
    name = "hybrid"
    description = "Reciprocal rank fusion of vector and full-text search (weights and depth in config)."

    async def retrieve(self, query: SearchQuery, context: RetrievalContext) -> Sequence[SearchHit]:
        if query.top_k < 1:
            return []
        weights = self.weights(query.options, context)
        depth = max(query.top_k, _depth(query.options, context.settings.hybrid_depth))
        parts = [(name, weight, self.part(name, context)) for name, weight in weights.items()]
        deeper = dataclasses.replace(query, top_k=depth)
        results = await _all(part.retrieve(deeper, context) for _n, _w, part in parts)
        rankings = [
            (weight, list(hits)[:depth]) for (_n, weight, _p), hits in zip(parts, results, strict=True)
        ]
        documents = await _documents_of(rankings, context) if _by_document(query.options) else None
        return fuse(rankings, context.settings.rrf_k, documents)[: query.top_k]

    def weights(self, options: Mapping[str, Any], context: RetrievalContext) -> dict[str, float]:
        """The parts and their weights: the request's ``weights`` option, else the configuration."""
        chosen = options.get("weights")
        if chosen is None:
            weights = dict(context.settings.hybrid_weights)
        elif isinstance(chosen, Mapping) and chosen:
            weights = {}
            for name, weight in chosen.items():
                if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
                    raise InvalidRequestError(f"options.weights.{name}: a weight is a number, 0 or more")
                weights[str(name)] = float(weight)
        else:
            raise InvalidRequestError("options.weights: an object of retriever name → weight")
        weights = {name: weight for name, weight in weights.items() if weight > 0}
        if not weights:
            raise InvalidRequestError("hybrid needs at least one retriever with a weight above 0")
        if self.name in weights:
            raise InvalidRequestError("hybrid cannot fuse itself; name other retrievers in its weights")
        return weights

    def part(self, name: str, context: RetrievalContext) -> Retriever:
        try:
            return context.retriever(name)
        except UnknownComponentError as err:
            raise UnknownComponentError(
                f"hybrid fuses {name!r} (retrieval.hybrid_weights, or the request's weights), but {err}"
            ) from None


def _by_document(options: Mapping[str, Any]) -> bool:
    value = options.get("by_document", True)
    if not isinstance(value, bool):
        raise InvalidRequestError("options.by_document: true or false")
    return value


async def _documents_of(
    rankings: Sequence[tuple[float, Sequence[SearchHit]]], context: RetrievalContext
) -> dict[str, str]:
    """Document id of every fused chunk the parts did not give one for (one query, within scope)."""
    missing = sorted({hit.chunk_id for _w, hits in rankings for hit in hits if not hit.document_id})
    if not missing:
        return {}
    scope = context.scope_sql("c")
    async with context.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT CAST(c.id AS text), CAST(c.document_id AS text) FROM intelligence.chunks c "
                f"WHERE c.id = ANY(CAST(:hybrid_ids AS uuid[])) AND {scope.sql}"
            ),
            {"hybrid_ids": missing, **scope.params},
        )
        return {chunk_id: document_id for chunk_id, document_id in rows}


async def _all(calls: Iterable[Awaitable[Sequence[SearchHit]]]) -> list[Sequence[SearchHit]]:
    """Every call's result, run concurrently; when one fails, the others are cancelled, not left behind."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _depth(options: Mapping[str, Any], default: int) -> int:
    value = options.get("depth", default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # numbers of a protobuf Struct are floats
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEPTH:
        raise InvalidRequestError(f"options.depth: a whole number from 1 to {MAX_DEPTH}")
    return value


@hookimpl
def register_retrievers(register: Callable[[Retriever], None]) -> None:
    register(HybridRetriever())
