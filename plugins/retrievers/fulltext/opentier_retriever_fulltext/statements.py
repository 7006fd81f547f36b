"""The SQL of a full-text search; every statement on ``intelligence.chunks`` includes the scope.

Term frequencies come from the chunk's own ``tsv``: ``setweight`` marks the query's lexemes and
``ts_filter`` keeps only them, so ``unnest`` yields a few rows whose position counts are the tf. That
reads the whole tsvector (often stored out of line), which is why it is done for few chunks: the
candidates are found and bounded from the GIN index and the chunk's length alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentier.retrieval import SqlFragment

#: Alias of ``intelligence.chunks`` in every statement (what ``scope_sql`` is asked for).
ALIAS = "c"

# Parameters are cast where they appear: PostgreSQL would infer ``1 - :b`` to be an integer.
_K1 = "CAST(:k1 AS float8)"
_B = "CAST(:b AS float8)"
_NORM = f"(1 - {_B} + {_B} * {{length}} / CAST(:average AS float8))"
_CHUNK_NORM = _NORM.format(length=f"{ALIAS}.token_count")

#: BM25 of chunk ``c`` for the query terms ``:lexemes`` weighted ``:weights``.
EXACT_SCORE = f"""(
    SELECT coalesce(sum(q.weight * f.tf * ({_K1} + 1) / (f.tf + {_K1} * {_CHUNK_NORM})), 0)
    FROM unnest(ts_filter(setweight({ALIAS}.tsv, 'A', CAST(:lexemes AS text[])), '{{a}}')) AS u
    JOIN unnest(CAST(:lexemes AS text[]), CAST(:weights AS float8[])) AS q(lexeme, weight)
        ON q.lexeme = u.lexeme
    CROSS JOIN LATERAL (SELECT greatest(cardinality(u.positions), 1) AS tf) AS f
)"""

# The chunks whose tsv matches, found by the GIN index alone: the OFFSET 0 fence keeps the planner
# from ANDing the bitmap with the (tenant, collection) index, which would read every entry of the
# collection (a tsquery known only at run time has no selectivity estimate). The scope filters after.
_MATCHING = (
    f"SELECT {ALIAS}.id, {ALIAS}.ctid AS tid, {ALIAS}.document_id, {ALIAS}.tenant_id, "
    f"{ALIAS}.collection_id, {ALIAS}.metadata, {ALIAS}.token_count{{extra}} FROM intelligence.chunks {ALIAS} "
    f"WHERE {ALIAS}.tsv @@ {{condition}} OFFSET 0"
)

# The chunks in which a lexeme occurs more than once, from the GIN index on fulltext_repeats(tsv)
# (migration 0005); fenced like _MATCHING.
_REPEATED = (
    f"SELECT {ALIAS}.id, {ALIAS}.tenant_id, {ALIAS}.collection_id, {ALIAS}.metadata "
    f"FROM intelligence.chunks {ALIAS} "
    f"WHERE intelligence.fulltext_repeats({ALIAS}.tsv) @@ CAST(p.probe AS tsquery) OFFSET 0"
)


def statistics(condition: str) -> str:
    """Per language group: the query's terms with document frequency and tf bound, and the totals.

    Totals (chunks, tokens, shortest chunk) are over every collection in scope; frequencies over the
    group's. ``condition`` is an SQL expression of ``g.language``: the group's required/excluded
    tsquery (see :func:`constraint`). Statistics rows are read for the search's tenant only.
    """
    return f"""
    WITH groups AS (
        SELECT g.language, g.number, CAST({condition} AS text) AS condition
        FROM unnest(CAST(:languages AS text[])) WITH ORDINALITY AS g(language, number)
    ),
    terms AS (
        SELECT g.number, g.condition, u.lexeme, greatest(cardinality(u.positions), 1) AS qtf
        FROM groups g, unnest(to_tsvector(CAST(g.language AS regconfig), CAST(:text AS text))) AS u
    ),
    members AS (
        SELECT m.collection_id, m.number
        FROM unnest(CAST(:members AS uuid[]), CAST(:member_groups AS bigint[])) AS m(collection_id, number)
    ),
    totals AS (
        SELECT coalesce(sum(t.chunks), 0) AS chunks, coalesce(sum(t.tokens), 0) AS tokens,
            coalesce(min(t.min_tokens), 0) AS shortest
        FROM intelligence.fulltext_totals t
        WHERE t.collection_id = ANY(CAST(:members AS uuid[])) AND t.tenant_id = :tenant
    )
    SELECT t.number, t.condition, t.lexeme, t.qtf, coalesce(sum(s.chunks), 0) AS frequency,
        coalesce(max(s.max_tf), 1) AS max_tf, totals.chunks, totals.tokens, totals.shortest
    FROM terms t
    JOIN members m ON m.number = t.number
    LEFT JOIN intelligence.fulltext_terms s
        ON s.collection_id = m.collection_id AND s.lexeme = t.lexeme AND s.tenant_id = :tenant
    CROSS JOIN totals
    GROUP BY t.number, t.condition, t.lexeme, t.qtf, totals.chunks, totals.tokens, totals.shortest
    """


def constraint(required: Sequence[Sequence[str]], excluded: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The SQL expression (of ``g.language``) of what a chunk must and must not hold, with its params.

    Each text is a phrase (``phraseto_tsquery``); a group is their OR, groups and exclusions are
    ANDed. Texts of stop words only give an empty tsquery, which the operators leave out. The
    expression is ``''`` when there is nothing to require.
    """
    params: dict[str, Any] = {}

    def phrase(text: str) -> str:
        name = f"phrase_{len(params)}"
        params[name] = text
        return f"phraseto_tsquery(CAST(g.language AS regconfig), CAST(:{name} AS text))"

    parts = ["(" + " || ".join(phrase(text) for text in group) + ")" for group in required]
    parts += [f"!!{phrase(text)}" for text in excluded]
    return (" && ".join(parts) if parts else "''"), params


def _hits(scope: SqlFragment, *, repeats: bool) -> str:
    """CTEs ``hits`` (a row per chunk and probe: one GIN bitmap scan per probe), ``bounds``, ``floor``.

    ``bounds`` gives each chunk the least (tf 1) and the most its probed terms can add at its length.
    The most takes a term's tf to be its ``max_tf``, unless ``repeats``: then a term probed in the
    index of repeated lexemes (``:repeat_probes``, ``:repeat_numbers``) has tf 1 in every chunk that
    index does not name. ``floor`` is the ``:skip + 1``-th best lower bound.
    """
    matching = _MATCHING.format(extra="", condition="CAST(p.probe AS tsquery)")
    repeated = (
        f"""
    repeats AS MATERIALIZED (
        SELECT r.id, p.number
        FROM unnest(CAST(:repeat_probes AS text[]), CAST(:repeat_numbers AS bigint[])) AS p(probe, number)
        CROSS JOIN LATERAL (
            SELECT {ALIAS}.id FROM ({_REPEATED}) AS {ALIAS}
            WHERE {scope.sql} AND {ALIAS}.collection_id = ANY(CAST(:collections AS uuid[]))
        ) AS r
    ),"""
        if repeats
        else ""
    )
    most = "CASE WHEN r.id IS NULL AND w.probed THEN 1 ELSE w.max_tf END" if repeats else "w.max_tf"
    join = "LEFT JOIN repeats r ON r.id = h.id AND r.number = h.number" if repeats else ""
    norm = _NORM.format(length="h.token_count")
    return f"""
    hits AS MATERIALIZED (
        SELECT h.id, h.tid, h.document_id, h.token_count, p.number
        FROM unnest(CAST(:probes AS text[])) WITH ORDINALITY AS p(probe, number)
        CROSS JOIN LATERAL (
            SELECT {ALIAS}.id, {ALIAS}.tid, {ALIAS}.document_id, {ALIAS}.token_count
            FROM ({matching}) AS {ALIAS}
            WHERE {scope.sql} AND {ALIAS}.collection_id = ANY(CAST(:collections AS uuid[]))
        ) AS h
    ),{repeated}
    bounds AS MATERIALIZED (
        SELECT h.id, h.tid, h.document_id,
            sum(w.weight * ({_K1} + 1) / (1 + {_K1} * {norm})) AS lower,
            sum(w.weight * m.tf * ({_K1} + 1) / (m.tf + {_K1} * {norm})) AS upper
        FROM hits h
        JOIN unnest(
            CAST(:probe_weights AS float8[]),
            CAST(:probe_max_tf AS float8[]),
            CAST(:probe_repeats AS boolean[])
        ) WITH ORDINALITY AS w(weight, max_tf, probed, number) ON w.number = h.number
        {join}
        CROSS JOIN LATERAL (SELECT {most} AS tf) AS m
        GROUP BY h.id, h.tid, h.document_id
    ),
    floor AS (
        SELECT coalesce((SELECT lower FROM bounds ORDER BY lower DESC OFFSET :skip LIMIT 1), 0) AS value
    )"""


def floor(scope: SqlFragment) -> str:
    """The k-th best lower bound among the chunks the probes find: a score the top k will reach."""
    return f"WITH {_hits(scope, repeats=False)} SELECT value FROM floor"


def ranked(scope: SqlFragment) -> str:
    """Every chunk that can be in the top k, with its exact score: a superset of the top k.

    Of the chunks the probes find, those whose upper bound reaches the floor are taken best lower
    bound first; the first ``:exact`` are scored, and the k-th best of those scores is a bar: the
    others are scored only if their upper bound reaches it (a chunk below it cannot rank). A chunk
    whose bounds agree is not read again; the others are fetched by ctid (a fenced LATERAL join, so
    that the plan is a TID scan per chunk whatever the estimates) in the snapshot that found them.
    """
    score = f"CASE WHEN r.upper - r.lower <= 1e-9 * r.upper THEN r.lower ELSE {EXACT_SCORE} END"
    fetch = (
        f"CROSS JOIN LATERAL (SELECT {ALIAS}.id, {ALIAS}.tsv, {ALIAS}.token_count "
        f"FROM intelligence.chunks {ALIAS} WHERE {ALIAS}.ctid = r.tid AND {scope.sql} OFFSET 0) AS {ALIAS}"
    )
    return f"""
    WITH {_hits(scope, repeats=True)},
    reaching AS MATERIALIZED (
        SELECT b.id, b.tid, b.document_id, b.lower, b.upper,
            row_number() OVER (ORDER BY b.lower DESC, b.id) AS place
        FROM bounds b, floor f
        WHERE b.upper >= f.value * (1 - 1e-9)
    ),
    first AS MATERIALIZED (
        SELECT {ALIAS}.id, r.document_id, {score} AS score
        FROM reaching r {fetch}
        WHERE r.place <= :exact
    ),
    bar AS (
        SELECT coalesce((SELECT score FROM first ORDER BY score DESC OFFSET :skip LIMIT 1), 0) AS value
    )
    SELECT id, document_id, score FROM first
    UNION ALL
    SELECT {ALIAS}.id, r.document_id, {score}
    FROM reaching r CROSS JOIN bar {fetch}
    WHERE r.place > :exact AND r.upper >= bar.value * (1 - 1e-9)
    """


def exhaustive(scope: SqlFragment) -> str:
    """Every chunk that matches ``:condition``, scored exactly (phrase queries: their chunks are few)."""
    matching = _MATCHING.format(extra=f", {ALIAS}.tsv", condition="CAST(:condition AS tsquery)")
    return f"""
    SELECT {ALIAS}.id, {ALIAS}.document_id, {EXACT_SCORE} AS score
    FROM ({matching}) AS {ALIAS}
    WHERE {scope.sql} AND {ALIAS}.collection_id = ANY(CAST(:collections AS uuid[]))
    ORDER BY score DESC, {ALIAS}.id
    LIMIT :k
    """


def lexeme_query(lexeme: str) -> str:
    """``lexeme`` as a tsquery operand, taken verbatim (quoted, with quotes and backslashes escaped)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
