"""Schema intelligence: BM25 statistics of each collection, kept by the database itself.

BM25 needs, per collection, the number of chunks N, their total length (for the average) and, per
lexeme, the number of chunks that hold it (document frequency). Triggers on ``chunks`` keep them in
the writing transaction: a replaced or deleted document (cascades included) takes its counts with
it, and a rollback takes both back.

No hot rows: counts are signed deltas spread over ``SLOTS`` rows per lexeme and collection. A
writing transaction takes one slot of the collection with a transaction-level advisory lock that it
only *tries* (the next slot when one is taken) and adds its deltas to its slot's rows only, so two
workers writing one collection never update the same row and never wait for each other. Readers
sum the slots. Counts are exact; ``max_tf`` (largest term frequency) and ``min_tokens`` (shortest
chunk) are bounds, kept with greatest/least and still valid after deletions, that let search prune.

Cost: one write per distinct lexeme per batch. Statement-level triggers with transition tables see a
multi-row INSERT (ingestion's) as one batch. A statement of fewer than ``BATCH_ROWS`` chunks (one row
per statement, say) is only noted in ``fulltext_pending`` (unlogged), and a deferred trigger counts
all the transaction's noted chunks together at commit. Deletes are counted at once, minus the chunks
still pending.

Writers must run at READ COMMITTED (as ingestion does): a slot row committed by an earlier holder
is updated in place, which REPEATABLE READ would refuse.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "intelligence"
#: Writers of one collection that can hold a slot at once; one more waits for a slot to free up.
SLOTS = 16
#: Chunks inserted by one statement from which they are counted at once rather than at commit.
BATCH_ROWS = 8
#: This transaction's id, as stored in ``fulltext_pending.xact``.
XACT = "CAST(CAST(pg_current_xact_id() AS text) AS bigint)"

# The slot of the current transaction for a collection: the first free one from 0, so that lone
# writers keep reusing slot 0 and rows per lexeme stay few. Re-entrant (a transaction holding a slot
# gets it again). When all are taken, wait for one chosen by backend pid.
SLOT_FUNCTION = f"""
CREATE FUNCTION {SCHEMA}.fulltext_slot(collection uuid) RETURNS smallint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    candidate integer;
BEGIN
    FOR candidate IN 0..{SLOTS - 1} LOOP
        IF pg_try_advisory_xact_lock(
            hashtextextended('opentier.fulltext:' || collection::text || ':' || candidate, 0)
        ) THEN
            RETURN candidate;
        END IF;
    END LOOP;
    candidate := pg_backend_pid() % {SLOTS};
    PERFORM pg_advisory_xact_lock(
        hashtextextended('opentier.fulltext:' || collection::text || ':' || candidate, 0)
    );
    RETURN candidate;
END
$$
"""


def count(prelude: str, rows: str, sign: int) -> str:
    """One statement adding (``sign`` 1) or taking away (-1) the statistics of chunks ``rows``.

    ``rows`` selects ``collection_id, tenant_id, tsv, token_count`` of chunks with a tsv; ``prelude``
    holds CTEs it may use. Each collection's deltas go to this transaction's slot. A collection that
    no longer exists (deleted by this very statement, its chunks going by cascade) is skipped: its
    rows go with it (trigger on collections).
    """
    max_tf = "max(greatest(cardinality(u.positions), 1))" if sign > 0 else "0"
    min_tokens = "coalesce(min(r.token_count), 2147483647)" if sign > 0 else "2147483647"
    return f"""
    WITH {prelude + "," if prelude else ""}
    changed AS MATERIALIZED ({rows}),
    held AS MATERIALIZED (
        SELECT r.collection_id, min(r.tenant_id) AS tenant_id,
            {SCHEMA}.fulltext_slot(r.collection_id) AS slot
        FROM changed r JOIN {SCHEMA}.collections k ON k.id = r.collection_id
        GROUP BY r.collection_id
    ),
    terms AS (
        INSERT INTO {SCHEMA}.fulltext_terms AS t (collection_id, lexeme, slot, tenant_id, chunks, max_tf)
        SELECT h.collection_id, u.lexeme, h.slot, h.tenant_id, {sign} * count(*), {max_tf}
        FROM changed r JOIN held h ON h.collection_id = r.collection_id, unnest(r.tsv) AS u
        GROUP BY h.collection_id, u.lexeme, h.slot, h.tenant_id
        ON CONFLICT (collection_id, lexeme, slot) DO UPDATE
            SET chunks = t.chunks + excluded.chunks, max_tf = greatest(t.max_tf, excluded.max_tf)
    )
    INSERT INTO {SCHEMA}.fulltext_totals AS t (collection_id, slot, tenant_id, chunks, tokens, min_tokens)
    SELECT h.collection_id, h.slot, h.tenant_id, {sign} * count(*),
        {sign} * coalesce(sum(r.token_count), 0), {min_tokens}
    FROM changed r JOIN held h ON h.collection_id = r.collection_id
    GROUP BY h.collection_id, h.slot, h.tenant_id
    ON CONFLICT (collection_id, slot) DO UPDATE
        SET chunks = t.chunks + excluded.chunks, tokens = t.tokens + excluded.tokens,
            min_tokens = least(t.min_tokens, excluded.min_tokens)
    """


def _function(name: str, body: str) -> str:
    return f"""
CREATE FUNCTION {SCHEMA}.{name}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
{body}
    RETURN NULL;
END
$$
"""


_COLUMNS = "collection_id, tenant_id, tsv, token_count"

# A batch is counted now; a row or a few (ingestion's INSERT per chunk) wait for the commit.
_COUNT_BATCH = count("", f"SELECT {_COLUMNS} FROM new_chunks WHERE tsv IS NOT NULL", 1)
INSERTED = _function(
    "fulltext_count_inserted",
    f"""
    IF (SELECT count(*) FROM new_chunks) >= {BATCH_ROWS} THEN
        {_COUNT_BATCH};
    ELSE
        INSERT INTO {SCHEMA}.fulltext_pending (xact, chunk_id)
        SELECT {XACT}, id FROM new_chunks WHERE tsv IS NOT NULL;
    END IF;
""",
)

# Fires once per pending row at commit (deferred); the first counts them all, the others find none.
_COUNT_PENDING = count(
    f"gone AS (DELETE FROM {SCHEMA}.fulltext_pending WHERE xact = {XACT} RETURNING chunk_id)",
    f"SELECT c.collection_id, c.tenant_id, c.tsv, c.token_count "
    f"FROM {SCHEMA}.chunks c JOIN gone g ON g.chunk_id = c.id WHERE c.tsv IS NOT NULL",
    1,
)
FLUSH = _function(
    "fulltext_count_pending",
    f"""
    IF EXISTS (SELECT 1 FROM {SCHEMA}.fulltext_pending WHERE xact = {XACT}) THEN
        {_COUNT_PENDING};
    END IF;
""",
)

# Chunks still pending (inserted by this transaction) were never counted: they are only forgotten.
_COUNT_DELETED = count(
    f"forgotten AS (DELETE FROM {SCHEMA}.fulltext_pending p USING old_chunks o "
    f"WHERE p.xact = {XACT} AND p.chunk_id = o.id RETURNING p.chunk_id)",
    f"SELECT {_COLUMNS} FROM old_chunks WHERE tsv IS NOT NULL AND id NOT IN (SELECT chunk_id FROM forgotten)",
    -1,
)
DELETED = _function("fulltext_count_deleted", f"    {_COUNT_DELETED};")

# An UPDATE that changes what BM25 counts (tsv, length, collection) of a counted chunk takes the old
# row away and adds the new one; a pending chunk is counted at commit as it is then.
_CHANGED = (
    "FROM old_chunks o JOIN new_chunks n ON n.id = o.id "
    "WHERE (o.tsv IS DISTINCT FROM n.tsv OR o.token_count IS DISTINCT FROM n.token_count "
    "OR o.collection_id IS DISTINCT FROM n.collection_id) "
    f"AND o.id NOT IN (SELECT chunk_id FROM {SCHEMA}.fulltext_pending WHERE xact = {XACT})"
)
_UNCOUNT_OLD = count(
    "", f"SELECT o.collection_id, o.tenant_id, o.tsv, o.token_count {_CHANGED} AND o.tsv IS NOT NULL", -1
)
_COUNT_NEW = count(
    "", f"SELECT n.collection_id, n.tenant_id, n.tsv, n.token_count {_CHANGED} AND n.tsv IS NOT NULL", 1
)
UPDATED = _function(
    "fulltext_count_updated",
    f"""
    IF EXISTS (SELECT 1 {_CHANGED}) THEN
        {_UNCOUNT_OLD};
        {_COUNT_NEW};
    END IF;
""",
)

FORGET = _function(
    "fulltext_forget_collections",
    f"""
    DELETE FROM {SCHEMA}.fulltext_terms WHERE collection_id IN (SELECT id FROM gone);
    DELETE FROM {SCHEMA}.fulltext_totals WHERE collection_id IN (SELECT id FROM gone);
""",
)

TRIGGERS = [
    f"CREATE TRIGGER fulltext_count_inserted AFTER INSERT ON {SCHEMA}.chunks "
    "REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT "
    f"EXECUTE FUNCTION {SCHEMA}.fulltext_count_inserted()",
    f"CREATE CONSTRAINT TRIGGER fulltext_count_pending AFTER INSERT ON {SCHEMA}.fulltext_pending "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    f"EXECUTE FUNCTION {SCHEMA}.fulltext_count_pending()",
    f"CREATE TRIGGER fulltext_count_deleted AFTER DELETE ON {SCHEMA}.chunks "
    "REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT "
    f"EXECUTE FUNCTION {SCHEMA}.fulltext_count_deleted()",
    f"CREATE TRIGGER fulltext_count_updated AFTER UPDATE ON {SCHEMA}.chunks "
    "REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks FOR EACH STATEMENT "
    f"EXECUTE FUNCTION {SCHEMA}.fulltext_count_updated()",
    # Statement-level AFTER triggers fire after the row-level cascades of the same statement, so
    # this runs once the collection's documents and chunks are gone.
    f"CREATE TRIGGER fulltext_forget_collections AFTER DELETE ON {SCHEMA}.collections "
    "REFERENCING OLD TABLE AS gone FOR EACH STATEMENT "
    f"EXECUTE FUNCTION {SCHEMA}.fulltext_forget_collections()",
]

# The lexemes that occur more than once in a tsvector, indexed: a search that finds a chunk there
# for none of its terms knows every term's frequency in it is 1, without reading its tsvector.
REPEATS_FUNCTION = f"""
CREATE FUNCTION {SCHEMA}.fulltext_repeats(tsv tsvector) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_to_tsvector(coalesce(array_agg(u.lexeme), '{{}}'))
    FROM unnest(tsv) AS u WHERE cardinality(u.positions) > 1
$$
"""
REPEATS_INDEX = (
    f"CREATE INDEX ix_chunks_tsv_repeats ON {SCHEMA}.chunks USING gin ({SCHEMA}.fulltext_repeats(tsv))"
)

FUNCTIONS = (
    "fulltext_forget_collections",
    "fulltext_count_updated",
    "fulltext_count_deleted",
    "fulltext_count_pending",
    "fulltext_count_inserted",
)

# Statistics of the chunks already stored, so that an existing installation ranks at once.
BACKFILL = [
    f"""
    INSERT INTO {SCHEMA}.fulltext_terms (collection_id, lexeme, slot, tenant_id, chunks, max_tf)
    SELECT c.collection_id, u.lexeme, 0, min(c.tenant_id), count(*),
        max(greatest(cardinality(u.positions), 1))
    FROM {SCHEMA}.chunks c, unnest(c.tsv) AS u
    GROUP BY c.collection_id, u.lexeme
    """,
    f"""
    INSERT INTO {SCHEMA}.fulltext_totals (collection_id, slot, tenant_id, chunks, tokens, min_tokens)
    SELECT collection_id, 0, min(tenant_id), count(*), sum(token_count), min(token_count)
    FROM {SCHEMA}.chunks WHERE tsv IS NOT NULL
    GROUP BY collection_id
    """,
]


def upgrade() -> None:
    op.create_table(
        "fulltext_terms",
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("max_tf", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", "lexeme", "slot", name="pk_fulltext_terms"),
        schema=SCHEMA,
        # Room on each page for the in-place (HOT) updates every ingested batch makes.
        postgresql_with={"fillfactor": 80},
    )
    op.create_table(
        "fulltext_totals",
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("min_tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", "slot", name="pk_fulltext_totals"),
        schema=SCHEMA,
    )
    # Rows live only inside the transaction that wrote them (counted and deleted at its commit), so
    # the table needs no WAL: after a crash it is empty, as it should be.
    op.create_table(
        "fulltext_pending",
        sa.Column("xact", sa.BigInteger(), nullable=False),
        sa.Column("chunk_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("xact", "chunk_id", name="pk_fulltext_pending"),
        schema=SCHEMA,
        prefixes=["UNLOGGED"],
    )
    op.execute(SLOT_FUNCTION)
    op.execute(REPEATS_FUNCTION)
    op.execute(REPEATS_INDEX)
    for function in (INSERTED, FLUSH, DELETED, UPDATED, FORGET):
        op.execute(function)
    for statement in BACKFILL:
        op.execute(statement)
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    op.execute(f"DROP TRIGGER fulltext_forget_collections ON {SCHEMA}.collections")
    for name in ("fulltext_count_updated", "fulltext_count_deleted", "fulltext_count_inserted"):
        op.execute(f"DROP TRIGGER {name} ON {SCHEMA}.chunks")
    op.execute(f"DROP TRIGGER fulltext_count_pending ON {SCHEMA}.fulltext_pending")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {SCHEMA}.{name}()")
    op.execute(f"DROP FUNCTION {SCHEMA}.fulltext_slot(uuid)")
    op.drop_index("ix_chunks_tsv_repeats", "chunks", schema=SCHEMA)
    op.execute(f"DROP FUNCTION {SCHEMA}.fulltext_repeats(tsvector)")
    op.drop_table("fulltext_pending", schema=SCHEMA)
    op.drop_table("fulltext_totals", schema=SCHEMA)
    op.drop_table("fulltext_terms", schema=SCHEMA)
