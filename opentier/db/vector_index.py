"""HNSW indexes on ``intelligence.chunks.embedding``, one per embedding dimension.

The column has no fixed dimension, so each dimension gets a partial expression index; a query uses
it by repeating the expression and the condition (see :func:`distance_sql`). The migration creates
the one for the default embedder (384 dimensions); :func:`ensure_vector_index` adds others when a
collection uses another embedder.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from opentier.errors import DatabaseError

log = logging.getLogger(__name__)

#: pgvector's HNSW index takes ``vector`` values of at most this many dimensions.
MAX_HNSW_DIMS = 2000
TABLE = "intelligence.chunks"


def vector_index_name(dims: int) -> str:
    return f"chunks_embedding_hnsw_{_check(dims)}"


def distance_sql(dims: int, parameter: str = "query") -> str:
    """``ORDER BY`` expression (cosine distance) that the index for ``dims`` serves.

    Pair it with ``WHERE embedding_dims = <dims>``; ``parameter`` names the bound query vector.
    """
    dims = _check(dims)
    return f"(embedding::vector({dims})) <=> CAST(:{parameter} AS vector({dims}))"


async def ensure_vector_index(conn: AsyncConnection, dims: int) -> bool:
    """Create the HNSW cosine index for ``dims`` unless it exists; return whether it was created.

    Serialised by an advisory lock so that two hosts cannot race; the caller commits. Building the
    index on a large table takes a while and blocks writes to ``chunks`` meanwhile.
    """
    dims = _check(dims)
    name = vector_index_name(dims)
    await conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext('opentier.vector_index'), :dims)"),
        {"dims": dims},
    )
    exists = await conn.scalar(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"intelligence.{name}"}
    )
    if exists:
        return False
    # Only the owner may create an index: a tenant transaction of a privileged host has taken the
    # unprivileged role of row-level security (see opentier.db.tenancy); it leaves it for this statement.
    role = await conn.scalar(sa.text("SELECT current_setting('role')"))
    if role != "none":
        await conn.execute(sa.text("SELECT set_config('role', 'none', true)"))
    await conn.execute(
        sa.text(
            f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} USING hnsw "
            f"((embedding::vector({dims})) vector_cosine_ops) WHERE embedding_dims = {dims}"
        )
    )
    if role != "none":
        await conn.execute(sa.text("SELECT set_config('role', :role, true)"), {"role": role})
    log.info("created HNSW index %s for %d-dimensional embeddings", name, dims)
    return True


def _check(dims: int) -> int:
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_HNSW_DIMS:
        raise DatabaseError(
            f"cannot index {dims!r}-dimensional embeddings: pgvector's HNSW index takes 1 to "
            f"{MAX_HNSW_DIMS} dimensions; choose an embedder with fewer dimensions"
        )
    return dims
