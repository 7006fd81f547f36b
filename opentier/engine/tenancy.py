"""A tenant's data on the host, counted or removed as a whole (when the operator deletes the tenant).

The purge first cancels the tenant's unfinished ingestion jobs the way ``CancelJob`` does, waits for the
workers in the middle of one of their batches to roll it back, then deletes the tenant's collections and
conversations in one transaction. Deleting a collection row is what ``DeleteCollection`` does: documents,
chunks, jobs and items go by cascade, and the triggers of the full-text statistics take the deleted
chunks' counts away and drop the collection's rows of ``fulltext_terms`` and ``fulltext_totals``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from opentier.db.models.intelligence import (
    Chunk,
    Collection,
    Conversation,
    Document,
    IngestionItem,
    IngestionJob,
    ItemStatus,
    JobStatus,
    Message,
)
from opentier.engine.jobs import Ingestion
from opentier.errors import InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)

UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class TenantCounts:
    """How many objects of each kind a tenant has (or had, after a purge)."""

    collections: int = 0
    documents: int = 0
    chunks: int = 0
    conversations: int = 0
    messages: int = 0
    ingestion_jobs: int = 0


class TenantData:
    """Counts and purges one tenant's collections, documents, chunks, jobs, conversations and messages."""

    def __init__(self, db: AsyncEngine, ingestion: Ingestion) -> None:
        self.db = db
        self.ingestion = ingestion

    async def counts(self, tenant_id: str) -> TenantCounts:
        tenant = _check(tenant_id)
        async with self.db.connect() as conn:
            return await _counts(conn, tenant)

    async def purge(self, tenant_id: str) -> TenantCounts:
        """Delete everything of the tenant; return how much there was. Repeating it deletes nothing."""
        tenant = _check(tenant_id)
        async with self.db.connect() as conn:
            unfinished = list(
                (
                    await conn.scalars(
                        sa.select(IngestionJob.id).where(
                            IngestionJob.tenant_id == tenant, IngestionJob.status.in_(UNFINISHED)
                        )
                    )
                ).all()
            )
        for job_id in unfinished:
            # A job deleted meanwhile (its collection went) has nothing left to stop.
            with contextlib.suppress(NotFoundError):
                await self.ingestion.cancel_job(tenant, job_id)
        async with self.db.begin() as conn:
            if unfinished:
                # A worker holds the items of its batch locked until it commits or rolls back; it sees
                # the cancellation within one embedding call and rolls back. Wait for that here, so the
                # deletes below never interleave with a batch of the tenant.
                await conn.execute(
                    sa.select(IngestionItem.id)
                    .where(
                        IngestionItem.job_id.in_(unfinished),
                        IngestionItem.status == ItemStatus.PENDING.value,
                    )
                    .with_for_update()
                )
            counts = await _counts(conn, tenant)
            await conn.execute(sa.delete(Collection).where(Collection.tenant_id == tenant))
            await conn.execute(sa.delete(Conversation).where(Conversation.tenant_id == tenant))
        log.info(
            "tenant %s purged: %d collections, %d documents, %d chunks, %d jobs, %d conversations, "
            "%d messages (%d unfinished jobs cancelled)",
            tenant,
            counts.collections,
            counts.documents,
            counts.chunks,
            counts.ingestion_jobs,
            counts.conversations,
            counts.messages,
            len(unfinished),
        )
        return counts


def _check(tenant_id: str) -> str:
    tenant = tenant_id.strip()
    if not tenant:
        raise InvalidRequestError("the caller has no tenant")
    return tenant


async def _count(conn: AsyncConnection, query: sa.Select[int]) -> int:
    return int(await conn.scalar(query) or 0)


async def _counts(conn: AsyncConnection, tenant: str) -> TenantCounts:
    def of(column: InstrumentedAttribute[str]) -> sa.Select[int]:
        return sa.select(sa.func.count()).select_from(column.class_).where(column == tenant)

    return TenantCounts(
        collections=await _count(conn, of(Collection.tenant_id)),
        documents=await _count(conn, of(Document.tenant_id)),
        chunks=await _count(conn, of(Chunk.tenant_id)),
        conversations=await _count(conn, of(Conversation.tenant_id)),
        # Through the conversations: messages are found by conversation (their index), not by tenant.
        messages=await _count(
            conn,
            sa.select(sa.func.count())
            .select_from(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.tenant_id == tenant),
        ),
        ingestion_jobs=await _count(conn, of(IngestionJob.tenant_id)),
    )
