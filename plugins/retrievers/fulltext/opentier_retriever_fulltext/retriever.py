"""The ``fulltext`` retriever: BM25's exact top k, found with PostgreSQL's GIN index and a few bounds.

A search reads, in one REPEATABLE READ snapshot:

1. the query's lexemes in each collection language, their document frequencies and tf bounds, the
   collections' totals, and the tsquery of its phrases and exclusions (migration 0005's statistics);
2. when its terms are frequent, a *floor*: the k-th best lower bound (tf = 1) among the chunks of its
   rarest terms. The final k-th score is at least that;
3. the chunks holding a set of terms whose upper bounds reach the floor (a boolean tsquery the GIN
   index answers, one scan per term, reading only each chunk's length), with their bounds; those
   that can still rank are scored exactly (see :func:`statements.ranked`).

So not every chunk that shares a word with the query is scored, yet the result is BM25's exact top
k. A query with a quoted phrase is scored over the chunks that hold the phrase, since GIN cannot
check word positions and those chunks are few.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from opentier.components import Retriever, SearchHit, SearchQuery
from opentier.retrieval import RetrievalContext, ScopedCollection
from opentier_retriever_fulltext import statements
from opentier_retriever_fulltext.bm25 import Parameters, Scorer, Term, idf, requirement
from opentier_retriever_fulltext.options import requested
from opentier_retriever_fulltext.query import ParsedQuery, parse

#: Postings of the rarest terms whose chunks set the floor.
SEED_POSTINGS = 500
#: Below this many postings in all, the floor is not worth its statement.
FLOOR_POSTINGS = 2000
#: Chunks scored exactly beyond k before the bar is set (at least; k / 2 when larger).
EXACT_MARGIN = 8
#: Terms held by more chunks are not looked up in the index of repeated lexemes (their weight is low).
REPEAT_POSTINGS = 20_000


@dataclass(frozen=True, slots=True)
class Group:
    """Collections of one language: their chunks are matched with that language's lexemes."""

    language: str
    collection_ids: tuple[uuid.UUID, ...]


@dataclass(slots=True)
class Statistics:
    chunks: int = 0
    tokens: int = 0
    shortest: int = 0
    #: Query terms held by at least one chunk, by group index.
    terms: dict[int, list[Term]] = field(default_factory=dict)
    #: The tsquery (text) of the query's phrases and exclusions, by group index; '' for none.
    conditions: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class Tuning:
    """Thresholds of the pruning (tests lower them to exercise it on small collections)."""

    seed_postings: int = SEED_POSTINGS
    floor_postings: int = FLOOR_POSTINGS
    repeat_postings: int = REPEAT_POSTINGS
    #: Chunks scored exactly beyond k before the bar is set; None: max(k / 2, EXACT_MARGIN).
    exact_extra: int | None = None


class FulltextRetriever(Retriever):
    name = "fulltext"
    description = (
        "BM25 over PostgreSQL full-text search: any word may match; phrases and -exclusions honoured."
    )

    def __init__(self, parameters: Parameters | None = None) -> None:
        self.parameters = parameters or Parameters()
        self.tuning = Tuning()

    async def retrieve(self, query: SearchQuery, context: RetrievalContext) -> Sequence[SearchHit]:
        if query.top_k < 1 or not context.collections:
            return []
        parameters = requested(query.options, self.parameters)
        parsed = parse(query.text)
        if not parsed.ranked:
            return []
        groups = language_groups(context.collections)
        hits: list[SearchHit] = []
        async with context.engine.connect() as pooled:
            # One snapshot: the statistics and bounds agree with the chunks they describe.
            conn = await pooled.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                stats = await read_statistics(conn, context.tenant_id, groups, parsed)
                if stats.chunks <= 0:
                    return []
                average = stats.tokens / stats.chunks if stats.tokens > 0 else 1.0
                scorer = Scorer(parameters, average, stats.shortest)
                for index, group in enumerate(groups):
                    terms = stats.terms.get(index)
                    if terms:
                        search = GroupSearch(
                            conn, context, group=group, terms=terms, scorer=scorer, k=query.top_k
                        )
                        search.tuning = self.tuning
                        hits.extend(await search.run(stats.conditions.get(index, "")))
        hits.sort(key=lambda hit: (-hit.score, hit.chunk_id))
        return hits[: query.top_k]


def language_groups(collections: Sequence[ScopedCollection]) -> list[Group]:
    languages: dict[str, list[uuid.UUID]] = {}
    for collection in collections:
        languages.setdefault(collection.language, []).append(uuid.UUID(collection.id))
    return [Group(language, tuple(ids)) for language, ids in sorted(languages.items())]


async def read_statistics(
    conn: AsyncConnection, tenant_id: str, groups: Sequence[Group], parsed: ParsedQuery
) -> Statistics:
    condition, condition_params = statements.constraint(parsed.required, parsed.excluded)
    params = {
        **condition_params,
        "languages": [group.language for group in groups],
        "text": " ".join(parsed.ranked),
        "members": [cid for group in groups for cid in group.collection_ids],
        "member_groups": [index + 1 for index, group in enumerate(groups) for _ in group.collection_ids],
        "tenant": tenant_id,
    }
    stats = Statistics()
    rows = (await conn.execute(sa.text(statements.statistics(condition)), params)).all()
    for number, condition_text, lexeme, qtf, frequency, max_tf, chunks, tokens, shortest in rows:
        stats.chunks, stats.tokens, stats.shortest = int(chunks), int(tokens), int(shortest)
        stats.conditions[number - 1] = str(condition_text or "")
        if frequency > 0:
            weight = qtf * idf(stats.chunks, int(frequency))
            term = Term(lexeme, weight, max(int(max_tf), 1), int(frequency))
            stats.terms.setdefault(number - 1, []).append(term)
    for terms in stats.terms.values():
        terms.sort(key=lambda term: term.lexeme)
    return stats


class GroupSearch:
    """The top k of one language group."""

    def __init__(
        self,
        conn: AsyncConnection,
        context: RetrievalContext,
        *,
        group: Group,
        terms: Sequence[Term],
        scorer: Scorer,
        k: int,
    ) -> None:
        self.conn = conn
        self.group = group
        self.terms = list(terms)
        self.scorer = scorer
        self.k = k
        self.scope = context.scope_sql(statements.ALIAS)
        self.tuning = Tuning()

    async def run(self, condition: str) -> list[SearchHit]:
        """The top k; ``condition`` is the tsquery every chunk must match ('' for none)."""
        if "<" in condition:  # a phrase (<-> or <N>): positions are checked on each chunk
            return await self.exhaustive(condition)
        uppers = [self.scorer.upper(term) for term in self.terms]
        seed = self.seed(uppers)
        floor = await self.floor(seed, condition) if seed else 0.0
        clauses = requirement(uppers, floor)
        if not clauses:
            return []
        return await self.ranked(clauses, condition)

    def common(self) -> dict[str, Any]:
        parameters = self.scorer.parameters
        return {
            **self.scope.params,
            "collections": list(self.group.collection_ids),
            "lexemes": [term.lexeme for term in self.terms],
            "weights": [term.weight for term in self.terms],
            "k1": parameters.k1,
            "b": parameters.b,
            "average": self.scorer.average_length,
            "skip": self.k - 1,
        }

    def seed(self, uppers: Sequence[float]) -> list[int]:
        """The rarest terms, up to ``seed_postings`` postings; none when every term is cheap anyway."""
        if sum(term.frequency for term in self.terms) <= max(self.tuning.floor_postings, 4 * self.k):
            return []
        chosen: list[int] = []
        postings = 0
        for index in sorted(range(len(self.terms)), key=lambda i: -uppers[i]):
            postings += self.terms[index].frequency
            if chosen and postings > self.tuning.seed_postings:
                break
            chosen.append(index)
        return chosen

    def probes(self, required: str) -> dict[str, Any]:
        """One probe per term: the term's chunks that also match ``required``.

        Terms that can occur more than once in a chunk, and whose chunks are not too many, are also
        probed in the index of repeated lexemes: a chunk it does not name has the term once.
        """
        extra = f" & ({required})" if required else ""
        repeats = [term.max_tf > 1 and term.frequency <= self.tuning.repeat_postings for term in self.terms]
        return {
            "probes": [statements.lexeme_query(term.lexeme) + extra for term in self.terms],
            "probe_weights": [term.weight for term in self.terms],
            "probe_max_tf": [float(term.max_tf) for term in self.terms],
            "probe_repeats": repeats,
            "repeat_probes": [
                statements.lexeme_query(term.lexeme)
                for term, probed in zip(self.terms, repeats, strict=True)
                if probed
            ],
            "repeat_numbers": [number for number, probed in enumerate(repeats, start=1) if probed],
        }

    async def floor(self, seed: Sequence[int], condition: str) -> float:
        """The k-th best lower bound among the chunks that hold a seed term (every term counted)."""
        anyone = " | ".join(statements.lexeme_query(self.terms[i].lexeme) for i in seed)
        params = {**self.common(), **self.probes(_both(anyone, condition))}
        return float((await self.conn.execute(sa.text(statements.floor(self.scope)), params)).scalar_one())

    async def ranked(self, clauses: Sequence[Sequence[int]], condition: str) -> list[SearchHit]:
        if len(clauses) == len(self.terms) and all(len(clause) == 1 for clause in clauses):
            required = condition  # any term will do: each probe is its term
        else:
            lexemes = [statements.lexeme_query(term.lexeme) for term in self.terms]
            sets = " | ".join("(" + " & ".join(lexemes[i] for i in clause) + ")" for clause in clauses)
            required = _both(sets, condition)
        extra = max(self.k // 2, EXACT_MARGIN) if self.tuning.exact_extra is None else self.tuning.exact_extra
        params = {**self.common(), **self.probes(required), "exact": self.k + extra}
        rows = (await self.conn.execute(sa.text(statements.ranked(self.scope)), params)).all()
        return _best(rows, self.k)

    async def exhaustive(self, condition: str) -> list[SearchHit]:
        anyone = " | ".join(statements.lexeme_query(term.lexeme) for term in self.terms)
        params = {**self.common(), "condition": _both(anyone, condition), "k": self.k}
        rows = (await self.conn.execute(sa.text(statements.exhaustive(self.scope)), params)).all()
        return _best(rows, self.k)


def _both(first: str, second: str) -> str:
    """The AND of two tsquery texts, either possibly empty."""
    return f"({first}) & ({second})" if first and second else first or second


def _best(rows: Sequence[Any], k: int) -> list[SearchHit]:
    scored = sorted(
        ((float(row.score), str(row.id), str(row.document_id)) for row in rows),
        key=lambda row: (-row[0], row[1]),
    )
    return [SearchHit(chunk_id=key, score=score, document_id=document) for score, key, document in scored[:k]]
