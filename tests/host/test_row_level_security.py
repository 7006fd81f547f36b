"""Tenancy enforced by PostgreSQL (row-level security, migration 0007): through the host's own engine a
query that forgets its tenant filter sees, and may write, the rows of the tenant it acts for only; with
no tenant, nothing. Two tenants ingest, search, chat and list through the real gRPC host meanwhile."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.db.models.intelligence import Document
from opentier.db.tenancy import TENANT_ROLE, internal_scope, restrict, tenant_scope
from opentier.engine.documents import DocumentInfo, _info
from opentier.errors import NotFoundError
from opentier.generated.intelligence.v1 import (
    collections_pb2,
    collections_pb2_grpc,
    conversations_pb2,
    documents_pb2,
    documents_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

from .chat_host import ENGINES, WINGS, ChatHost, answer_text, serve_chat_host
from .conftest import AUTH

#: Every table of schema intelligence that has tenant_id.
TENANT_TABLES = (
    "collections",
    "documents",
    "chunks",
    "ingestion_jobs",
    "ingestion_items",
    "fulltext_terms",
    "fulltext_totals",
    "conversations",
    "messages",
)


@dataclasses.dataclass
class TwoTenants:
    a: ChatHost
    b: ChatHost
    collections: dict[str, str]  # tenant -> collection id
    documents: dict[str, str]  # tenant -> document id

    @property
    def engine(self) -> AsyncEngine:
        """The host's own engine (``create_engine(settings, tenancy=True)``)."""
        runtime = self.a.server.runtime
        assert runtime is not None
        return runtime.db


@pytest_asyncio.fixture
async def two(db_settings: Settings, tmp_path: Path) -> AsyncIterator[TwoTenants]:
    """One host; tenant a owns a document about wings, tenant b one about engines, each has chatted."""
    async with serve_chat_host(db_settings, tmp_path) as host_a:
        host_b = dataclasses.replace(host_a, tenant=f"tenant-{uuid.uuid4().hex[:10]}")
        collections, documents = {}, {}
        for host, name, text in ((host_a, "wings.txt", WINGS), (host_b, "engines.txt", ENGINES)):
            collection = await host.collection()
            collections[host.tenant] = collection.id
            documents[host.tenant] = await host.upload(collection.id, name, text)
            host.scripted.script = [f"About {name} [1]."]
            events = await host.ask("What does it say?", collection_ids=[collection.id])
            assert answer_text(events) == f"About {name} [1]."
        yield TwoTenants(host_a, host_b, collections, documents)


async def tenants_in(engine: AsyncEngine, table: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text(f"SELECT tenant_id, count(*) FROM intelligence.{table} GROUP BY 1"))
        return {tenant: count for tenant, count in rows}


async def test_a_raw_select_without_where_returns_only_the_scoped_tenants_rows(
    two: TwoTenants, db_engine: AsyncEngine
) -> None:
    a, b = two.a.tenant, two.b.tenant
    for table in TENANT_TABLES:
        everyone = await tenants_in(db_engine, table)  # the test's superuser engine has no scope
        assert everyone.get(a) and everyone.get(b), (table, everyone)
        with tenant_scope(a):
            assert await tenants_in(two.engine, table) == {a: everyone[a]}, table
        with tenant_scope(b):
            assert await tenants_in(two.engine, table) == {b: everyone[b]}, table
        assert await tenants_in(two.engine, table) == {}, table  # no scope: no rows at all
        with internal_scope():
            seen = await tenants_in(two.engine, table)
        assert seen[a] == everyone[a] and seen[b] == everyone[b], table


async def test_the_embedded_superuser_takes_the_unprivileged_role_except_for_internal_work(
    two: TwoTenants, db_engine: AsyncEngine
) -> None:
    async def who() -> tuple[str, str, bool]:
        async with two.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT current_user, current_setting('opentier.tenant_id', true), "
                        "(SELECT rolsuper FROM pg_roles WHERE rolname = session_user)"
                    )
                )
            ).one()
            return str(row[0]), str(row[1]), bool(row[2])

    with tenant_scope(two.a.tenant):
        user, setting, session_is_superuser = await who()
    assert session_is_superuser, "the embedded default connects as the superuser"
    assert (user, setting) == (TENANT_ROLE, two.a.tenant)
    assert (await who())[:2] == (TENANT_ROLE, "")
    with internal_scope():
        assert (await who())[:2] == ("postgres", "*")
    with internal_scope():  # an ingestion batch: claimed internally, then narrowed to its job's tenant
        async with two.engine.begin() as conn:
            await restrict(conn, two.b.tenant)
            row = (
                await conn.execute(sa.text("SELECT current_user, count(*) FROM intelligence.chunks"))
            ).one()
            assert row[0] == TENANT_ROLE
            assert row[1] == (await tenants_in(db_engine, "chunks"))[two.b.tenant]
    async with two.engine.connect() as conn:  # the scope is transaction-local: nothing lingers
        await conn.commit()
        assert await conn.scalar(sa.text("SELECT current_setting('opentier.tenant_id', true)")) == ""


async def test_writing_another_tenants_rows_is_refused(two: TwoTenants, db_engine: AsyncEngine) -> None:
    a, b = two.a.tenant, two.b.tenant
    with tenant_scope(a):
        with pytest.raises(DBAPIError, match="row-level security"):
            async with two.engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO intelligence.collections (tenant_id, name, embedder, embedder_version, "
                        "embedding_dims) VALUES (:b, 'planted', 'test-hash', '1', 8)"
                    ),
                    {"b": b},
                )
        with pytest.raises(DBAPIError, match="row-level security"):  # moving a's own row to b
            async with two.engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE intelligence.collections SET tenant_id = :b WHERE id = :id"),
                    {"b": b, "id": uuid.UUID(two.collections[a])},
                )
        async with two.engine.begin() as conn:  # b's rows are not there to change or delete
            changed = await conn.execute(sa.text("UPDATE intelligence.documents SET title = 'mine'"))
            deleted = await conn.execute(
                sa.text("DELETE FROM intelligence.chunks WHERE tenant_id = :b"), {"b": b}
            )
            assert deleted.rowcount == 0
            assert changed.rowcount == 1  # a's one document
            await conn.rollback()
    assert await tenants_in(db_engine, "collections") and (await tenants_in(db_engine, "chunks")).get(b)
    async with db_engine.connect() as conn:
        names = await conn.scalars(
            sa.text("SELECT name FROM intelligence.collections WHERE tenant_id IN (:a, :b)"), {"a": a, "b": b}
        )
        assert "planted" not in set(names)


async def test_a_forgotten_tenant_filter_in_a_grpc_call_leaks_nothing(
    two: TwoTenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetDocument and ListCollections with their tenant filters removed, as a careless change would."""
    a, b = two.a.tenant, two.b.tenant
    runtime = two.a.server.runtime
    assert runtime is not None

    async def get_without_filter(tenant_id: str, document_id: str) -> DocumentInfo:
        async with runtime.db.connect() as conn:
            row = (
                await conn.execute(sa.select(Document.__table__).where(Document.id == uuid.UUID(document_id)))
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"document {document_id} does not exist")
        return _info(row)

    monkeypatch.setattr(runtime.documents, "get", get_without_filter)
    documents = documents_pb2_grpc.DocumentServiceStub(two.a.channel)
    mine = await documents.GetDocument(
        documents_pb2.GetDocumentRequest(caller=two.a.caller(), document_id=two.documents[a]), metadata=AUTH
    )
    assert mine.source == "wings.txt"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await documents.GetDocument(
            documents_pb2.GetDocumentRequest(caller=two.a.caller(), document_id=two.documents[b]),
            metadata=AUTH,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_two_tenants_list_search_and_read_their_own(two: TwoTenants) -> None:
    search = search_pb2_grpc.SearchServiceStub(two.a.channel)
    collections = collections_pb2_grpc.CollectionServiceStub(two.a.channel)
    for host, mine, theirs in ((two.a, "Wings make lift", "Jet engines"), (two.b, "Jet engines", "Wings")):
        listed = await collections.ListCollections(
            collections_pb2.ListCollectionsRequest(caller=host.caller()), metadata=AUTH
        )
        assert [c.id for c in listed.collections] == [two.collections[host.tenant]]
        found = await search.Search(
            search_pb2.SearchRequest(caller=host.caller(), query="wings lift engines fuel", top_k=10),
            metadata=AUTH,
        )
        assert found.hits and all(hit.text.startswith(mine) for hit in found.hits), found
        assert not any(hit.text.startswith(theirs) for hit in found.hits)
        conversations = await host.conversations.ListConversations(
            conversations_pb2.ListConversationsRequest(caller=host.caller()), metadata=AUTH
        )
        [conversation] = conversations.conversations
        read = await host.conversation(conversation.id)
        assert [m.content for m in read.messages] == [
            "What does it say?",
            f"About {'wings' if host is two.a else 'engines'}.txt [1].",
        ]


async def test_search_keeps_its_indexes_under_the_policy(two: TwoTenants) -> None:
    """Full-text matching (GIN) and vector ordering (HNSW) still use their indexes in a tenant's
    transaction: the policy must not turn a search into a scan of every tenant's chunks."""
    statements = {
        "ix_chunks_tsv": "SELECT id FROM intelligence.chunks c WHERE c.tsv @@ to_tsquery('english', 'wing')",
        "ix_chunks_tsv_repeats": "SELECT id FROM intelligence.chunks c "
        "WHERE intelligence.fulltext_repeats(c.tsv) @@ to_tsquery('english', 'wing')",
        "chunks_embedding_hnsw_32": "SELECT id FROM intelligence.chunks c WHERE embedding_dims = 32 "
        "ORDER BY (embedding::vector(32)) <=> CAST(array_fill(0.5, ARRAY[32]) AS vector(32)) LIMIT 5",
    }
    with tenant_scope(two.a.tenant):
        async with two.engine.connect() as conn:
            await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))  # a tiny table: force the choice
            for index, statement in statements.items():
                plan = "\n".join((await conn.execute(sa.text(f"EXPLAIN {statement}"))).scalars())
                assert index in plan and "current_setting" in plan, plan


async def test_an_owner_that_is_not_a_superuser_is_bound_by_force(
    two: TwoTenants, db_engine: AsyncEngine
) -> None:
    """An external server where the host connects as the tables' plain owner: no role to take, FORCE
    binds it. Simulated in one transaction rolled back (ownership, role and all)."""
    a, b = two.a.tenant, two.b.tenant
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    async with db_engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await conn.execute(sa.text(f"CREATE ROLE {owner} NOSUPERUSER NOBYPASSRLS"))
            await conn.execute(sa.text(f"GRANT USAGE ON SCHEMA intelligence TO {owner}"))
            await conn.execute(sa.text(f"ALTER TABLE intelligence.collections OWNER TO {owner}"))
            await conn.execute(sa.text(f"SET LOCAL ROLE {owner}"))
            seen = {}
            for scope in (a, "", "*"):
                await conn.execute(sa.text("SELECT set_config('opentier.tenant_id', :s, true)"), {"s": scope})
                rows = await conn.execute(sa.text("SELECT tenant_id FROM intelligence.collections"))
                seen[scope] = {tenant for (tenant,) in rows}
        finally:
            await transaction.rollback()
    assert seen[a] == {a}
    assert seen[""] == set()
    assert {a, b} <= seen["*"]
