"""Ingestion jobs: created from a request, worked by any host, resumable, cancellable.

A job is a row of ``intelligence.ingestion_jobs`` and its work is rows of
``intelligence.ingestion_items``. Workers claim a batch of pending items with ``FOR UPDATE SKIP
LOCKED`` and keep them locked in the transaction that writes their documents: when a host dies, its
transactions roll back, the items are pending again and another worker (or the same host after a
restart) takes them, so nothing is lost and nothing is written twice. Cancelling a job marks it
cancelled; a worker in the middle of one of its batches notices within one embedding call and
rolls the batch back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentier.components import Cleaner, ComponentKind, Loader
from opentier.config import IngestionSettings
from opentier.db.tenancy import internal_scope, restrict
from opentier.engine import sources
from opentier.engine.chunker import Chunker
from opentier.engine.collections import Collections, parse_id
from opentier.engine.fingerprints import digest
from opentier.engine.pagination import Page, decode_token, encode_token
from opentier.engine.pipeline import BatchProcessor, JobCancelled, JobContext, Outcome, Progress, WorkItem
from opentier.errors import InvalidRequestError, NotFoundError, OpenTierError
from opentier.registry import Registry

log = logging.getLogger(__name__)

JOBS = "intelligence.ingestion_jobs"
ITEMS = "intelligence.ingestion_items"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
#: How often a worker looks for work queued by other hosts, and a waiting stream for the end.
POLL_SECONDS = 1.0
CANCEL_CHECK_SECONDS = 0.5
INSERT_BATCH = 500
#: Payloads up to this size are read together when a batch is claimed.
PREFETCH_BYTES = 256 * 1024
#: Items in the first batch claimed from a job that has not started: small, so the embedder gets its
#: first texts at once instead of after a whole batch was loaded, cleaned and chunked.
FIRST_BATCH_ITEMS = 16


@dataclass(frozen=True, slots=True)
class JobOptions:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    recursive: bool = True
    force: bool = False
    delete_missing: bool = False
    loader: str | None = None
    cleaners: Sequence[str] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "recursive": self.recursive,
            "force": self.force,
            "delete_missing": self.delete_missing,
            "loader": self.loader,
            "cleaners": list(self.cleaners),
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobOptions:
        return cls(
            include=tuple(data.get("include") or ()),
            exclude=tuple(data.get("exclude") or ()),
            recursive=bool(data.get("recursive", True)),
            force=bool(data.get("force")),
            delete_missing=bool(data.get("delete_missing")),
            loader=data.get("loader") or None,
            cleaners=tuple(data.get("cleaners") or ()),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One unit of work to add to a job."""

    kind: str  # file, path, url, text, remove
    source: str
    payload: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobCounts:
    items_total: int = 0
    items_done: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    dropped: int = 0
    failed: int = 0
    chunks_written: int = 0

    @property
    def documents_seen(self) -> int:
        return self.created + self.updated + self.unchanged + self.deleted + self.dropped + self.failed


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: uuid.UUID
    tenant_id: str
    collection_id: uuid.UUID
    status: str
    source: dict[str, Any]
    options: JobOptions
    counts: JobCounts
    created_by: str | None
    error_code: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class JobEvents:
    """In-process fan-out of progress events to the streams watching a job on this host."""

    def __init__(self) -> None:
        self._watchers: dict[uuid.UUID, set[asyncio.Queue[Progress | None]]] = {}

    def publish(self, event: Progress) -> None:
        for queue in self._watchers.get(event.job_id, ()):
            with contextlib.suppress(asyncio.QueueFull):  # a slow watcher loses progress, not the job
                queue.put_nowait(event)

    def finished(self, job_id: uuid.UUID) -> None:
        for queue in self._watchers.get(job_id, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID) -> Any:
        queue: asyncio.Queue[Progress | None] = asyncio.Queue(maxsize=10_000)
        self._watchers.setdefault(job_id, set()).add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[job_id]


class Ingestion:
    """Creates, runs, reports on and cancels ingestion jobs for one host."""

    def __init__(
        self,
        db: AsyncEngine,
        settings: IngestionSettings,
        registry: Registry,
        collections: Collections,
        host_id: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry
        self.collections = collections
        self.host_id = host_id or f"{socket.gethostname()}:{os.getpid()}"
        self.events = JobEvents()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._cancelled: set[uuid.UUID] = set()
        # One embedding call at a time per host: the model uses every core already, and while one
        # worker embeds, the others load, clean, chunk and store (that overlap is the pipeline's speed).
        self._embedding = asyncio.Lock()
        self._last_cancel_check: dict[uuid.UUID, float] = {}
        self._contexts: dict[uuid.UUID, JobContext] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        # Workers and the sweeper serve every tenant: their tasks inherit the internal scope.
        with internal_scope():
            try:  # before the workers start, so that none claims the items of a dead stream's job
                await self.sweep_interrupted_streams()
            except Exception:
                log.exception("sweeping interrupted streaming jobs failed; the sweeper tries again")
            for number in range(self.settings.worker_count()):
                self._workers.append(asyncio.create_task(self._work(number), name=f"ingest-worker-{number}"))
            self._workers.append(asyncio.create_task(self._sweep_streams(), name="ingest-stream-sweeper"))

    async def stop(self) -> None:
        """Stop the workers; a batch in progress rolls back and stays pending for the next start."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    # -- creating jobs --------------------------------------------------------------------------

    async def create_job(
        self,
        tenant_id: str,
        collection_id: uuid.UUID | str,
        source: dict[str, Any],
        options: JobOptions,
        items: Iterable[ItemSpec],
        *,
        created_by: str | None = None,
        input_complete: bool = True,
        job_id: uuid.UUID | None = None,
    ) -> JobInfo:
        """Create a job of ``items`` and wake the workers. ``job_id`` (default: a new one) lets a caller
        subscribe to the job's events (:meth:`JobEvents.watch`) before any worker can take it: a small
        job may be done before this method returns."""
        collection = await self.collections.get(tenant_id, collection_id)
        self.collections.embedder_for(collection)  # refuse now, not in the worker
        self._cleaners(options)
        self._loaders(options)
        async with self.db.begin() as conn:
            job_id = (
                await conn.execute(
                    sa.text(
                        f"INSERT INTO {JOBS} (id, tenant_id, collection_id, status, source, options, "
                        "created_by, input_complete) VALUES (:id, :tenant, :collection, 'queued', "
                        "CAST(:source AS jsonb), CAST(:options AS jsonb), :created_by, :complete) "
                        "RETURNING id"
                    ),
                    {
                        "id": job_id or uuid.uuid4(),
                        "tenant": tenant_id,
                        "collection": collection.id,
                        "source": json.dumps(source),
                        "options": json.dumps(options.as_json()),
                        "created_by": created_by,
                        "complete": input_complete,
                    },
                )
            ).scalar_one()
            await self._insert_items(conn, job_id, tenant_id, 0, items)
        if input_complete:
            await self._finish_if_done(job_id)
        self._wakeup.set()
        return await self.get_job(tenant_id, job_id)

    async def add_items(
        self, tenant_id: str, job_id: uuid.UUID, first: int, items: Sequence[ItemSpec]
    ) -> int:
        """Append items to an open (streaming) job; return the next ordinal."""
        async with self.db.begin() as conn:
            status = await conn.scalar(
                sa.text(f"SELECT status FROM {JOBS} WHERE id = :id AND tenant_id = :tenant"),
                {"id": job_id, "tenant": tenant_id},
            )
            if status is None:
                raise NotFoundError(f"job {job_id} does not exist")
            if status in TERMINAL:
                raise InvalidRequestError(f"job {job_id} is {status}; it takes no more records")
            count = await self._insert_items(conn, job_id, tenant_id, first, items)
            touch = sa.text(f"UPDATE {JOBS} SET updated_at = now() WHERE id = :id")
            await conn.execute(touch, {"id": job_id})
        self._wakeup.set()
        return first + count

    async def keep_stream_alive(self, job_id: uuid.UUID) -> None:
        """Say that the stream feeding ``job_id`` is alive (see :meth:`sweep_interrupted_streams`).

        The host holding the stream calls it every third of ``stream_stale_seconds`` while the stream
        is open, records or not; adding records says it too.
        """
        async with self.db.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE {JOBS} SET updated_at = now() WHERE id = :id AND NOT input_complete"),
                {"id": job_id},
            )

    async def sweep_interrupted_streams(self) -> list[uuid.UUID]:
        """Cancel streaming jobs whose stream went silent: the host that held it died (SIGKILL, power).

        A stream that breaks while its host lives is cancelled by that host at once; this covers the
        host itself going away, which would otherwise leave the job open for ever. Records already
        ingested stay; the pending ones are cancelled. Any host may sweep; returns the jobs cancelled.
        """
        async with self.db.begin() as conn:
            rows = await conn.execute(
                sa.text(
                    f"UPDATE {JOBS} SET status = 'cancelled', finished_at = now(), updated_at = now(), "
                    "error_code = 'stream_interrupted', error = 'the stream feeding this job stopped "
                    "without closing (its host went away); the records received before are ingested' "
                    "WHERE NOT input_complete AND status IN ('queued', 'running') "
                    "AND updated_at < now() - make_interval(secs => :stale) RETURNING id"
                ),
                {"stale": self.settings.stream_stale_seconds},
            )
            swept = [row[0] for row in rows]
            for job_id in swept:
                await _cancel_pending(conn, job_id)
            # Items a worker held while its job was cancelled, when that host stopped before it could
            # settle them: they would stay pending under a finished job.
            await conn.execute(
                sa.text(
                    f"UPDATE {ITEMS} SET status = 'cancelled', finished_at = now() WHERE id IN "
                    f"(SELECT i.id FROM {ITEMS} i JOIN {JOBS} j ON j.id = i.job_id "
                    "WHERE j.status = 'cancelled' AND i.status = 'pending' FOR UPDATE OF i SKIP LOCKED)"
                )
            )
        for job_id in swept:
            log.warning("streaming job %s cancelled: its stream went silent (host gone)", job_id)
            self._forget(job_id)
            self.events.finished(job_id)
        return swept

    async def _sweep_streams(self) -> None:
        interval = max(1.0, self.settings.stream_stale_seconds / 3)
        while True:
            try:
                await self.sweep_interrupted_streams()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeping interrupted streaming jobs failed; trying again later")
            await asyncio.sleep(interval)

    async def close_input(self, tenant_id: str, job_id: uuid.UUID) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE {JOBS} SET input_complete = true WHERE id = :id AND tenant_id = :tenant"),
                {"id": job_id, "tenant": tenant_id},
            )
        await self._finish_if_done(job_id)

    async def _insert_items(
        self, conn: AsyncConnection, job_id: uuid.UUID, tenant_id: str, first: int, items: Iterable[ItemSpec]
    ) -> int:
        statement = sa.text(
            f"INSERT INTO {ITEMS} (job_id, tenant_id, ordinal, kind, source, payload, details) "
            "VALUES (:job, :tenant, :ordinal, :kind, :source, :payload, CAST(:details AS jsonb))"
        )
        batch: list[dict[str, Any]] = []
        count = 0
        for item in items:
            batch.append(
                {
                    "job": job_id,
                    "tenant": tenant_id,
                    "ordinal": first + count,
                    "kind": item.kind,
                    "source": item.source,
                    "payload": item.payload,
                    "details": json.dumps(item.details, default=str),
                }
            )
            count += 1
            if len(batch) >= INSERT_BATCH:
                await conn.execute(statement, batch)
                batch = []
        if batch:
            await conn.execute(statement, batch)
        return count

    def path_items(
        self, path: str, options: JobOptions, existing_sources: Iterable[str] = ()
    ) -> list[ItemSpec]:
        """The items of a path source: one per file, plus removals for vanished files."""
        roots = self.settings.roots
        found = [
            ItemSpec("path", entry.source, details={"path": str(entry.path)})
            for entry in sources.walk(
                path, roots, include=options.include, exclude=options.exclude, recursive=options.recursive
            )
        ]
        if options.delete_missing:
            prefix = sources.folder_prefix(path, roots)
            present = {item.source for item in found}
            found.extend(
                ItemSpec("remove", source)
                for source in existing_sources
                if source.startswith(prefix) and source not in present
            )
        return found

    async def sources_in(self, tenant_id: str, collection_id: uuid.UUID) -> list[str]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT source FROM intelligence.documents WHERE tenant_id = :tenant AND "
                    "collection_id = :collection"
                ),
                {"tenant": tenant_id, "collection": collection_id},
            )
            return [row[0] for row in rows]

    # -- reading jobs ---------------------------------------------------------------------------

    async def get_job(self, tenant_id: str, job_id: uuid.UUID | str) -> JobInfo:
        key = parse_id(job_id, "job")
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(
                    _job_query().where(sa.text("j.tenant_id = :tenant AND j.id = :id")),
                    {"tenant": tenant_id, "id": key},
                )
            ).all()
        if not rows:
            raise NotFoundError(f"job {job_id} does not exist")
        return _job_info(rows[0])

    async def list_jobs(
        self,
        tenant_id: str,
        *,
        collection_id: uuid.UUID | str | None = None,
        statuses: Sequence[str] = (),
        page_size: int = 50,
        page_token: str = "",
    ) -> Page[JobInfo]:
        size = max(1, min(page_size or 50, 500))
        conditions = ["j.tenant_id = :tenant"]
        params: dict[str, Any] = {"tenant": tenant_id, "limit": size + 1}
        if collection_id:
            # An unknown collection (another tenant's included) is not found, as on ListDocuments.
            collection = await self.collections.get(tenant_id, collection_id)
            conditions.append("j.collection_id = :collection")
            params["collection"] = collection.id
        if statuses:
            conditions.append("j.status = ANY(:statuses)")
            params["statuses"] = list(statuses)
        if page_token:
            created, last_id = decode_token(page_token, 2)
            conditions.append("(j.created_at, j.id) < (:created, :last)")
            params.update(created=datetime.fromisoformat(created), last=parse_id(last_id, "job"))
        query = (
            _job_query()
            .where(sa.text(" AND ".join(conditions)))
            .order_by(sa.text("j.created_at DESC, j.id DESC"))
            .limit(sa.bindparam("limit"))
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query, params)).all()
        jobs = [_job_info(row) for row in rows[:size]]
        token = encode_token(jobs[-1].created_at.isoformat(), str(jobs[-1].id)) if len(rows) > size else ""
        return Page(jobs, token)

    async def cancel_job(self, tenant_id: str, job_id: uuid.UUID | str) -> JobInfo:
        key = parse_id(job_id, "job")
        await self.get_job(tenant_id, key)  # 404 for another tenant's job
        self._cancelled.add(key)
        async with self.db.begin() as conn:
            changed = await conn.execute(
                sa.text(
                    f"UPDATE {JOBS} SET status = 'cancelled', finished_at = now(), updated_at = now() "
                    "WHERE id = :id AND status IN ('queued', 'running') RETURNING id"
                ),
                {"id": key},
            )
            if changed.one_or_none() is not None:
                await _cancel_pending(conn, key)
        self.events.finished(key)
        return await self.get_job(tenant_id, key)

    async def wait(self, tenant_id: str, job_id: uuid.UUID) -> JobInfo:
        """Return once the job is finished (by any host)."""
        with self.events.watch(job_id) as queue:
            while True:
                job = await self.get_job(tenant_id, job_id)
                if job.terminal:
                    return job
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        while await queue.get() is not None:
                            pass

    async def follow(
        self, tenant_id: str, job_id: uuid.UUID, queue: asyncio.Queue[Progress | None] | None = None
    ) -> AsyncIterator[Progress | JobInfo]:
        """Progress events of the job as this host works it, then the finished job. ``queue``: one
        from :meth:`JobEvents.watch` entered before the job was created, so that no event is missed."""
        if queue is None:
            with self.events.watch(job_id) as watched:
                async for step in self.follow(tenant_id, job_id, watched):
                    yield step
            return
        while True:
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    event = await queue.get()
            except TimeoutError:
                event = None
            if event is not None:
                yield event
                continue
            job = await self.get_job(tenant_id, job_id)
            if job.terminal:
                while not queue.empty():
                    late = queue.get_nowait()
                    if late is not None:
                        yield late
                yield job
                return

    # -- workers --------------------------------------------------------------------------------

    async def _work(self, number: int) -> None:
        while True:
            # Cleared before looking, so a job created while we look wakes us again at once.
            self._wakeup.clear()
            try:
                worked = await self._one_batch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingest worker %d: a batch failed; retrying shortly", number)
                worked = False
                await asyncio.sleep(POLL_SECONDS)
            if not worked:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._wakeup.wait()

    async def _one_batch(self) -> bool:
        async with self.db.connect() as conn:
            transaction = await conn.begin()
            try:
                claimed = await _claim(conn, self.settings.batch_items)
                if not claimed:
                    await transaction.rollback()
                    return False
                job_id = claimed[0].job_id
                await self._mark_running(job_id)
                buffered: list[Progress] = []
                context = await self._context(job_id)
                # Claimed across tenants; the batch itself writes its job's tenant's rows only.
                await restrict(conn, context.tenant_id)

                def emit(event: Progress) -> None:
                    if event.status == "in_progress":
                        self.events.publish(event)
                    else:
                        buffered.append(event)

                # Small payloads (records, small uploads) in one query; big ones when their turn comes.
                prefetched = {
                    item_id: bytes(value)
                    for item_id, value in await conn.execute(
                        sa.text(
                            f"SELECT id, payload FROM {ITEMS} WHERE id = ANY(:ids) "
                            "AND payload IS NOT NULL AND octet_length(payload) <= :small"
                        ),
                        {"ids": [item.id for item in claimed], "small": PREFETCH_BYTES},
                    )
                }

                async def payload(item_id: uuid.UUID) -> bytes | None:
                    if item_id in prefetched:
                        return prefetched.pop(item_id)
                    value = await conn.scalar(
                        sa.text(f"SELECT payload FROM {ITEMS} WHERE id = :id"), {"id": item_id}
                    )
                    return bytes(value) if value is not None else None

                async def embed(texts: Sequence[str]) -> list[list[float]]:
                    async with self._embedding:
                        return await context.embedder.embed(texts)

                processor = BatchProcessor(
                    conn, context, emit, lambda: self._is_cancelled(job_id), payload, embed=embed
                )
                outcomes = await processor.run(claimed)
                await _record_outcomes(conn, outcomes)
                await transaction.commit()
            except JobCancelled:
                await transaction.rollback()
                await self._settle_cancelled(claimed[0].job_id)
                return True
            except OpenTierError as err:
                await transaction.rollback()
                await self._fail_items(claimed, err)
                return True
            except BaseException:
                if transaction.is_active:
                    await transaction.rollback()
                raise
        for event in buffered:
            self.events.publish(event)
        await self._finish_if_done(job_id)
        return True

    async def _context(self, job_id: uuid.UUID) -> JobContext:
        """The job's context, built at its first batch on this host and kept until it ends: a job's
        collection, embedder and options do not change, and rebuilding them would count the
        collection's chunks at every batch."""
        if job_id not in self._contexts:
            self._contexts[job_id] = await self._build_context(job_id)
        return self._contexts[job_id]

    async def _build_context(self, job_id: uuid.UUID) -> JobContext:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(f"SELECT tenant_id, collection_id, options FROM {JOBS} WHERE id = :id"),
                    {"id": job_id},
                )
            ).one()
        tenant_id, collection_id, raw_options = row
        options = JobOptions.from_json(raw_options)
        collection = await self.collections.get(tenant_id, collection_id)
        embedder = self.collections.embedder_for(collection)
        max_tokens = min(self.settings.chunk_tokens, embedder.max_input_tokens)
        cleaners = self._cleaners(options)
        pipeline = digest(
            embedder.name,
            embedder.version,
            str(max_tokens),
            str(self.settings.chunk_overlap_tokens),
            ",".join(cleaner.name for cleaner in cleaners),
            options.loader or "",
        )
        return JobContext(
            job_id=job_id,
            tenant_id=tenant_id,
            collection=collection,
            embedder=embedder,
            chunker=Chunker(
                embedder.count_tokens,
                max_tokens,
                self.settings.chunk_overlap_tokens,
                token_spans=embedder.token_spans,
            ),
            loaders=self._loaders(options),
            cleaners=cleaners,
            settings=self.settings,
            force=options.force,
            loader=options.loader,
            metadata=options.metadata,
            pipeline=pipeline,
        )

    def _cleaners(self, options: JobOptions) -> list[Cleaner]:
        names = list(options.cleaners) or list(self.settings.cleaners)
        found: list[Cleaner] = []
        for name in names:
            cleaner = self.registry.get(ComponentKind.CLEANER, name)
            assert isinstance(cleaner, Cleaner)
            found.append(cleaner)
        return found

    def _loaders(self, options: JobOptions) -> list[Loader]:
        names = self.settings.loaders or self.registry.names(ComponentKind.LOADER)
        if options.loader:
            names = [options.loader]
        found: list[Loader] = []
        for name in names:
            loader = self.registry.get(ComponentKind.LOADER, name)
            assert isinstance(loader, Loader)
            found.append(loader)
        return found

    async def _is_cancelled(self, job_id: uuid.UUID) -> bool:
        if job_id in self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check.get(job_id, 0.0) < CANCEL_CHECK_SECONDS:
            return False
        self._last_cancel_check[job_id] = now
        async with self.db.connect() as conn:
            status = await conn.scalar(sa.text(f"SELECT status FROM {JOBS} WHERE id = :id"), {"id": job_id})
        if status == "cancelled":
            self._cancelled.add(job_id)
            return True
        return False

    async def _mark_running(self, job_id: uuid.UUID) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                sa.text(
                    f"UPDATE {JOBS} SET status = 'running', started_at = coalesce(started_at, now()), "
                    "claimed_by = :host, claimed_at = now(), updated_at = now() "
                    "WHERE id = :id AND status = 'queued'"
                ),
                {"id": job_id, "host": self.host_id},
            )

    def _forget(self, job_id: uuid.UUID) -> None:
        """Drop what this host kept about a job that ended."""
        self._cancelled.discard(job_id)
        self._last_cancel_check.pop(job_id, None)
        self._contexts.pop(job_id, None)

    async def _settle_cancelled(self, job_id: uuid.UUID) -> None:
        async with self.db.begin() as conn:
            await _cancel_pending(conn, job_id)
        self._forget(job_id)  # a worker still in a batch of it reads the cancel from the database
        self.events.finished(job_id)

    async def _fail_items(self, items: Sequence[WorkItem], err: OpenTierError) -> None:
        """A batch failed as a whole (e.g. the embedder broke): its items fail, the job goes on."""
        stage = getattr(err, "stage", "embed")
        log.warning("batch of %d items failed at %s: %s", len(items), stage, err)
        async with self.db.begin() as conn:
            await conn.execute(
                sa.text(
                    f"UPDATE {ITEMS} SET status = 'failed', stage = :stage, error_code = :code, "
                    "error_message = :message, failed = 1, finished_at = now() WHERE id = ANY(:ids)"
                ),
                {"stage": stage, "code": err.code, "message": err.message, "ids": [i.id for i in items]},
            )
        for item in items:
            self.events.publish(
                Progress(item.job_id, item.source, stage, "failed", None, err.code, err.message)
            )
        await self._finish_if_done(items[0].job_id)

    async def _finish_if_done(self, job_id: uuid.UUID) -> None:
        async with self.db.begin() as conn:
            finished = await conn.execute(
                sa.text(
                    f"UPDATE {JOBS} SET status = 'succeeded', finished_at = now(), updated_at = now(), "
                    "started_at = coalesce(started_at, now()) "
                    "WHERE id = :id AND status IN ('queued', 'running') AND input_complete AND NOT EXISTS "
                    f"(SELECT 1 FROM {ITEMS} WHERE job_id = :id AND status = 'pending') RETURNING id"
                ),
                {"id": job_id},
            )
            done = finished.one_or_none() is not None
        if done:
            self._forget(job_id)
            self.events.finished(job_id)


# Items of one source take effect in order (a record, then its removal): an item waits while an earlier
# item of the same source is pending, even when another worker holds that one. A correlated scalar
# subquery (not NOT EXISTS, which the planner may turn into a join that scans every pending item of the
# job per candidate when a new job's statistics are stale) is one probe of the partial index of
# pending items by source.
_FIRST_OF_ITS_SOURCE = (
    f"i.ordinal = (SELECT min(e.ordinal) FROM {ITEMS} e WHERE e.job_id = i.job_id "
    "AND e.source = i.source AND e.status = 'pending')"
)


async def _claim(conn: AsyncConnection, limit: int) -> list[WorkItem]:
    """Lock up to ``limit`` pending items of the oldest job with work nobody holds (at most
    :data:`FIRST_BATCH_ITEMS` of a job not started yet, so that its embedding begins at once).

    Active jobs are few, so they are tried oldest first, one indexed query each; ordering every
    pending item of every job instead costs a sort of all of them at each claim.
    """
    jobs = await conn.execute(
        sa.text(
            f"SELECT j.id, j.status FROM {JOBS} j WHERE j.status IN ('queued', 'running') AND EXISTS "
            f"(SELECT 1 FROM {ITEMS} i WHERE i.job_id = j.id AND i.status = 'pending') "
            "ORDER BY j.created_at, j.id"
        )
    )
    for job_id, status in jobs.all():
        rows = (
            await conn.execute(
                sa.text(
                    f"SELECT id, job_id, ordinal, kind, source, details FROM {ITEMS} i "
                    f"WHERE job_id = :job AND status = 'pending' AND {_FIRST_OF_ITS_SOURCE} "
                    "ORDER BY ordinal LIMIT :limit FOR UPDATE SKIP LOCKED"
                ),
                {"job": job_id, "limit": min(limit, FIRST_BATCH_ITEMS) if status == "queued" else limit},
            )
        ).all()
        if rows:
            return [WorkItem(*row) for row in rows]
    return []


async def _record_outcomes(conn: AsyncConnection, outcomes: dict[uuid.UUID, Outcome]) -> None:
    await conn.execute(
        sa.text(
            f"UPDATE {ITEMS} SET status = :status, stage = :stage, error_code = :code, "
            "error_message = :message, document_id = :document, created = :created, updated = :updated, "
            "unchanged = :unchanged, deleted = :deleted, dropped = :dropped, failed = :failed, "
            "chunks = :chunks, size_bytes = :size, payload = NULL, finished_at = now() WHERE id = :id"
        ),
        [
            {
                "id": item_id,
                "status": outcome.status,
                "stage": outcome.stage,
                "code": outcome.error_code,
                "message": outcome.error_message,
                "document": outcome.document_id,
                "created": outcome.created,
                "updated": outcome.updated,
                "unchanged": outcome.unchanged,
                "deleted": outcome.deleted,
                "dropped": outcome.dropped,
                "failed": outcome.failed,
                "chunks": outcome.chunks,
                "size": outcome.size_bytes,
            }
            for item_id, outcome in outcomes.items()
        ],
    )


async def _cancel_pending(conn: AsyncConnection, job_id: uuid.UUID) -> None:
    # Items a worker holds are skipped here; that worker rolls back and cancels them itself.
    await conn.execute(
        sa.text(
            f"UPDATE {ITEMS} SET status = 'cancelled', finished_at = now() WHERE id IN "
            f"(SELECT id FROM {ITEMS} WHERE job_id = :id AND status = 'pending' FOR UPDATE SKIP LOCKED)"
        ),
        {"id": job_id},
    )


def _job_query() -> sa.Select[Any]:
    counts = (
        f"SELECT count(*) AS items_total, count(*) FILTER (WHERE status <> 'pending') AS items_done, "
        "coalesce(sum(created), 0) AS created, coalesce(sum(updated), 0) AS updated, "
        "coalesce(sum(unchanged), 0) AS unchanged, coalesce(sum(deleted), 0) AS deleted, "
        "coalesce(sum(dropped), 0) AS dropped, coalesce(sum(failed), 0) AS failed, "
        f"coalesce(sum(chunks), 0) AS chunks_written FROM {ITEMS} WHERE job_id = j.id"
    )
    return sa.select(sa.text("j.*"), sa.text("c.*")).select_from(
        sa.text(f"{JOBS} j CROSS JOIN LATERAL ({counts}) c")
    )


def _job_info(row: sa.Row[Any]) -> JobInfo:
    data = row._mapping
    return JobInfo(
        id=data["id"],
        tenant_id=data["tenant_id"],
        collection_id=data["collection_id"],
        status=data["status"],
        source=dict(data["source"]),
        options=JobOptions.from_json(dict(data["options"])),
        counts=JobCounts(
            items_total=int(data["items_total"]),
            items_done=int(data["items_done"]),
            created=int(data["created"]),
            updated=int(data["updated"]),
            unchanged=int(data["unchanged"]),
            deleted=int(data["deleted"]),
            dropped=int(data["dropped"]),
            failed=int(data["failed"]),
            chunks_written=int(data["chunks_written"]),
        ),
        created_by=data["created_by"],
        error_code=data["error_code"],
        error=data["error"],
        created_at=data["created_at"],
        started_at=data["started_at"],
        finished_at=data["finished_at"],
    )
