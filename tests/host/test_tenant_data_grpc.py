"""TenantData through the real gRPC host: a tenant's data counted and purged, the admin scope required,
an unfinished ingestion job stopped first, and every other tenant left exactly as it was."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.db.tenancy import tenant_scope
from opentier.engine.chat import Owner
from opentier.generated.intelligence.v1 import (
    collections_pb2,
    common_pb2,
    ingest_pb2,
    tenants_pb2,
    tenants_pb2_grpc,
)

from .conftest import AUTH, Host, trailer, write_corpus

#: Tables of schema intelligence with a tenant_id column, all of which a purge must empty for the tenant.
TABLES = (
    "collections",
    "documents",
    "chunks",
    "ingestion_jobs",
    "ingestion_items",
    "conversations",
    "messages",
    "fulltext_terms",
    "fulltext_totals",
)


def admin_caller(tenant: str) -> common_pb2.Caller:
    return common_pb2.Caller(tenant_id=tenant, scopes=["admin"], request_id="purge-test")


async def rows_of(engine: AsyncEngine, tenant: str) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table: int(
                await conn.scalar(
                    sa.text(f"SELECT count(*) FROM intelligence.{table} WHERE tenant_id = :t"), {"t": tenant}
                )
                or 0
            )
            for table in TABLES
        }


async def seed(host: Host, tenant: str, prefix: str) -> str:
    """A collection with an ingested corpus and a conversation of ``tenant``; the collection id."""
    folder = host.root / prefix
    folder.mkdir()
    write_corpus(folder, count=3, prefix=prefix)
    created = await host.collections.CreateCollection(
        collections_pb2.CreateCollectionRequest(caller=host.caller(tenant), name=f"docs-{prefix}"),
        metadata=AUTH,
        timeout=10,
    )
    events = await host.ingest_all(
        ingest_pb2.IngestRequest(caller=host.caller(tenant), collection_id=created.id, path=str(folder))
    )
    assert events[-1].summary.status == ingest_pb2.JOB_STATUS_SUCCEEDED, events[-1]
    with tenant_scope(tenant):  # called directly, not through a gRPC call that would set the scope
        await host.runtime.conversations.create(Owner(tenant, "tester"), title=f"about {prefix}")
    return str(created.id)


@pytest.fixture
def stub(host: Host) -> tenants_pb2_grpc.TenantDataAsyncStub:
    return tenants_pb2_grpc.TenantDataStub(host.channel)


async def test_purge_needs_the_admin_scope_and_leaves_other_tenants_alone(
    host: Host, stub: tenants_pb2_grpc.TenantDataAsyncStub, db_engine: AsyncEngine
) -> None:
    doomed, kept = host.tenant, f"tenant-{uuid.uuid4().hex[:10]}"
    doomed_collection = await seed(host, doomed, "alpha")
    await seed(host, kept, "beta")
    # An ingestion job still open (its client keeps streaming records): the purge must stop it first.
    stream = host.ingest.IngestStream(metadata=AUTH, timeout=60)
    await stream.write(
        ingest_pb2.IngestStreamRequest(
            caller=host.caller(doomed), start=ingest_pb2.IngestStreamStart(collection_id=doomed_collection)
        )
    )
    await stream.write(
        ingest_pb2.IngestStreamRequest(
            caller=host.caller(doomed),
            record=ingest_pb2.IngestRecord(source="open/1", text="A record of a job that never ends."),
        )
    )
    async with asyncio.timeout(10):
        while not await _unfinished_jobs(db_engine, doomed):
            await asyncio.sleep(0.05)

    before_doomed, before_kept = await rows_of(db_engine, doomed), await rows_of(db_engine, kept)
    assert all(before_kept[table] > 0 for table in ("collections", "documents", "chunks", "fulltext_terms"))
    assert before_doomed["chunks"] > 0 and before_doomed["conversations"] == 1

    # Without the admin scope: refused, nothing deleted.
    for call in (stub.DescribeTenantData, stub.PurgeTenantData):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(tenants_pb2.TenantDataRequest(caller=host.caller(doomed)), metadata=AUTH, timeout=10)
        assert (refused.value.code(), trailer(refused.value)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "permission_denied",
        )
    assert await rows_of(db_engine, doomed) == before_doomed

    described = await stub.DescribeTenantData(
        tenants_pb2.TenantDataRequest(caller=admin_caller(doomed)), metadata=AUTH, timeout=10
    )
    assert (described.collections, described.conversations, described.messages) == (1, 1, 0)
    assert described.documents == before_doomed["documents"]
    assert described.chunks == before_doomed["chunks"]
    assert described.ingestion_jobs == before_doomed["ingestion_jobs"] == 2

    purged = await stub.PurgeTenantData(
        tenants_pb2.TenantDataRequest(caller=admin_caller(doomed)), metadata=AUTH, timeout=60
    )
    assert purged == described
    assert await rows_of(db_engine, doomed) == dict.fromkeys(TABLES, 0)
    assert await rows_of(db_engine, kept) == before_kept
    stream.cancel()

    # Repeating the purge finds nothing left.
    again = await stub.PurgeTenantData(
        tenants_pb2.TenantDataRequest(caller=admin_caller(doomed)), metadata=AUTH, timeout=60
    )
    assert again == tenants_pb2.TenantDataCounts()


async def _unfinished_jobs(engine: AsyncEngine, tenant: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM intelligence.ingestion_jobs WHERE tenant_id = :t "
                "AND status IN ('queued', 'running')"
            ),
            {"t": tenant},
        )
    return int(found or 0)
