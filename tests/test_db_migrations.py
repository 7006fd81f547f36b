"""Migrations on a real PostgreSQL: a schema per side, pgvector, HNSW, idempotence, concurrency."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.db.migrate import current_revisions, head_revisions, migrate
from opentier.db.migrations.environment import include_object, only_schema
from opentier.db.models.gateway import GatewayBase
from opentier.db.models.intelligence import IntelligenceBase
from opentier.db.vector_index import distance_sql, ensure_vector_index, vector_index_name
from opentier.errors import DatabaseError, MigrationError

EXPECTED_TABLES = {
    "gateway": {
        "alembic_version",
        "tenants",
        "users",
        "auth_sessions",
        "refresh_tokens",
        "api_keys",
        "login_attempts",
        "audit_log",
        "token_usage",
        "mail_tokens",
        "limit_overrides",
        "notices_sent",
    },
    "intelligence": {
        "alembic_version",
        "collections",
        "documents",
        "chunks",
        "ingestion_jobs",
        "ingestion_items",
        "fulltext_terms",
        "fulltext_totals",
        "fulltext_pending",
        "conversations",
        "messages",
    },
}


async def rows(conn: AsyncConnection, sql: str, **params: Any) -> list[Any]:
    return list((await conn.execute(text(sql), params)).all())


async def test_both_schemas_hold_their_own_tables(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        found = await rows(
            conn,
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('gateway', 'intelligence')",
        )
    tables: dict[str, set[str]] = {"gateway": set(), "intelligence": set()}
    for schema, table in found:
        tables[schema].add(table)
    assert tables == EXPECTED_TABLES


async def test_vector_extension_lives_in_public(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        found = await rows(
            conn,
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'",
        )
    assert found == [("public",)]


async def test_chunks_embedding_is_a_vector_of_any_dimension(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        found = await rows(
            conn,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'intelligence.chunks'::regclass AND attname = 'embedding'",
        )
    assert found == [("vector",)]


async def test_hnsw_cosine_index_for_384_dimensions(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        found = await rows(
            conn,
            "SELECT i.relname, am.amname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam "
            "WHERE x.indrelid = 'intelligence.chunks'::regclass AND am.amname = 'hnsw' "
            "AND i.relname = 'chunks_embedding_hnsw_384'",
        )
    # Other tests of the session may add indexes for other dimensions; the migration made this one.
    assert len(found) == 1
    name, method, definition = found[0]
    assert (name, method) == ("chunks_embedding_hnsw_384", "hnsw")
    assert "vector(384)" in definition and "vector_cosine_ops" in definition
    assert "WHERE (embedding_dims = 384)" in definition


async def test_models_match_the_migrations(db_engine: AsyncEngine) -> None:
    def differences(sync_conn: Connection, schema: str, metadata: MetaData) -> list[Any]:
        context = MigrationContext.configure(
            sync_conn,
            opts={
                "include_schemas": True,
                "version_table_schema": schema,
                "include_name": only_schema(schema),
                "include_object": include_object,
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, metadata))

    async with db_engine.connect() as conn:
        assert await conn.run_sync(differences, "gateway", GatewayBase.metadata) == []
        assert await conn.run_sync(differences, "intelligence", IntelligenceBase.metadata) == []


async def schema_snapshot(conn: AsyncConnection) -> list[Any]:
    return await rows(
        conn,
        "SELECT n.nspname, c.relname, c.relkind, c.oid FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('gateway', 'intelligence') ORDER BY 1, 2",
    )


async def test_migrating_again_changes_nothing(database_url: str, db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        before = await schema_snapshot(conn)

    first = await migrate(database_url)
    second = await migrate(database_url, sides=["intelligence", "gateway"])

    async with db_engine.connect() as conn:
        after = await schema_snapshot(conn)
    assert after == before  # same objects, same oids: nothing was dropped and re-created
    assert first == second == head_revisions() == await current_revisions(database_url)


async def test_concurrent_migrations_of_a_fresh_database(database_url: str, db_engine: AsyncEngine) -> None:
    name = f"opentier_concurrent_{uuid.uuid4().hex[:8]}"
    admin = db_engine.execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        if not await conn.scalar(
            text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
        ):
            pytest.skip("the test database user may not create databases")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = make_url(database_url).set(database=name)
    try:
        results = await asyncio.gather(*(migrate(fresh) for _ in range(4)))
        assert all(result == head_revisions() for result in results)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def unit_vector(dims: int, hot: int, noise: float = 0.0) -> str:
    values = [noise] * dims
    values[hot] = 1.0
    norm = math.sqrt(sum(v * v for v in values))
    return "[" + ",".join(f"{v / norm:.6f}" for v in values) + "]"


async def insert_document(conn: AsyncConnection, tenant: str, dims: int) -> tuple[Any, Any]:
    collection_id = await conn.scalar(
        text(
            "INSERT INTO intelligence.collections (tenant_id, name, embedder, embedding_dims) "
            "VALUES (:tenant, 'docs', 'test', :dims) RETURNING id"
        ),
        {"tenant": tenant, "dims": dims},
    )
    document_id = await conn.scalar(
        text(
            "INSERT INTO intelligence.documents (tenant_id, collection_id, source, status) "
            "VALUES (:tenant, :collection, 'a.txt', 'ready') RETURNING id"
        ),
        {"tenant": tenant, "collection": collection_id},
    )
    return collection_id, document_id


async def insert_chunk(
    conn: AsyncConnection,
    ids: tuple[Any, Any],
    *,
    tenant: str,
    ordinal: int,
    embedding: str,
    dims: int,
) -> None:
    await conn.execute(
        text(
            "INSERT INTO intelligence.chunks (tenant_id, collection_id, document_id, ordinal, "
            "text, token_count, embedding, embedding_dims) VALUES (:tenant, :collection, "
            ":document, :ordinal, :text, 1, CAST(:embedding AS vector), :dims)"
        ),
        {
            "tenant": tenant,
            "collection": ids[0],
            "document": ids[1],
            "ordinal": ordinal,
            "text": f"chunk {ordinal}",
            "embedding": embedding,
            "dims": dims,
        },
    )


async def test_cosine_nearest_neighbour_through_the_hnsw_index(db_engine: AsyncEngine) -> None:
    tenant = f"t-{uuid.uuid4()}"
    async with db_engine.connect() as conn, conn.begin() as transaction:
        ids = await insert_document(conn, tenant, 384)
        for ordinal in range(5):
            await insert_chunk(
                conn,
                ids,
                tenant=tenant,
                ordinal=ordinal,
                embedding=unit_vector(384, ordinal, 0.01),
                dims=384,
            )
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        query = (
            "SELECT ordinal FROM intelligence.chunks WHERE embedding_dims = 384 "
            f"ORDER BY {distance_sql(384)} LIMIT 1"
        )
        target = unit_vector(384, 3, 0.02)

        plan = "\n".join(r[0] for r in await rows(conn, "EXPLAIN " + query, query=target))
        nearest = await rows(conn, query, query=target)

        assert vector_index_name(384) in plan
        assert nearest == [(3,)]
        await transaction.rollback()


async def test_another_dimension_gets_its_own_index(db_engine: AsyncEngine) -> None:
    tenant = f"t-{uuid.uuid4()}"
    async with db_engine.connect() as conn, conn.begin() as transaction:
        assert await ensure_vector_index(conn, 8) is True
        assert await ensure_vector_index(conn, 8) is False
        ids = await insert_document(conn, tenant, 8)
        for ordinal in range(3):
            await insert_chunk(
                conn, ids, tenant=tenant, ordinal=ordinal, embedding=unit_vector(8, ordinal), dims=8
            )
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        query = (
            "SELECT ordinal FROM intelligence.chunks WHERE embedding_dims = 8 "
            f"ORDER BY {distance_sql(8)} LIMIT 1"
        )
        plan = "\n".join(r[0] for r in await rows(conn, "EXPLAIN " + query, query=unit_vector(8, 2)))
        assert vector_index_name(8) in plan
        assert await rows(conn, query, query=unit_vector(8, 2)) == [(2,)]
        await transaction.rollback()


async def test_embedding_dims_must_match_the_vector(db_engine: AsyncEngine) -> None:
    tenant = f"t-{uuid.uuid4()}"
    async with db_engine.connect() as conn, conn.begin():
        ids = await insert_document(conn, tenant, 384)
        with pytest.raises(IntegrityError, match="ck_chunks_embedding_dims"):
            await insert_chunk(conn, ids, tenant=tenant, ordinal=0, embedding=unit_vector(8, 0), dims=384)


def test_vector_index_refuses_impossible_dimensions() -> None:
    with pytest.raises(DatabaseError, match="1 to 2000 dimensions"):
        vector_index_name(4096)


async def test_engine_from_settings(db_settings: Settings) -> None:
    engine = create_engine(db_settings)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_setting('application_name')")) == ("opentier")
        assert engine.pool.size() == db_settings.database.pool_size  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    assert await current_revisions(db_settings) == head_revisions()


async def test_unknown_side_is_refused(database_url: str) -> None:
    with pytest.raises(MigrationError, match=r"unknown side.*'chat'.*gateway, intelligence"):
        await migrate(database_url, sides=["chat"])


async def test_unreachable_server_is_a_clear_error(tmp_path: Any) -> None:
    url = f"postgresql://postgres@/nowhere?host={tmp_path}"
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        await migrate(url)


async def test_only_one_side_can_be_migrated(database_url: str) -> None:
    assert await migrate(database_url, sides=["gateway"]) == {"gateway": head_revisions()["gateway"]}
