"""One batch of work items through load → clean → chunk → embed → store, in one transaction.

The worker that claimed the items holds them locked in ``conn``'s transaction; documents are written
in savepoints so one bad document never fails the others, and the chunks of every document in the
batch are embedded together (the embedder sorts them by length), which keeps the embedder busy with
full batches even when documents are small.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from opentier.components import Cleaner, Document, Dropped, Embedder, Loader, Source
from opentier.config import IngestionSettings
from opentier.engine import sources, store
from opentier.engine.chunker import Chunk, Chunker
from opentier.engine.collections import CollectionInfo
from opentier.engine.fingerprints import content_hash, digest, simhash
from opentier.errors import DocumentError, DocumentLoadError, OpenTierError, SourceTooLargeError

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a batch when its job was cancelled; the batch's transaction rolls back."""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed row of ``intelligence.ingestion_items`` (payload fetched separately)."""

    id: uuid.UUID
    job_id: uuid.UUID
    ordinal: int
    kind: str
    source: str
    details: dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What became of one item (its documents' counts, or its failure)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    dropped: int = 0
    failed: int = 0
    chunks: int = 0
    size_bytes: int | None = None
    document_id: uuid.UUID | None = None
    stage: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def status(self) -> str:
        return (
            "failed" if self.error_code and not (self.created or self.updated or self.unchanged) else "done"
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """A document moved on: what the Ingest stream reports."""

    job_id: uuid.UUID
    source: str
    stage: str  # queued, loading, cleaning, chunking, embedding, storing, done
    status: str  # in_progress, created, updated, unchanged, deleted, dropped, failed
    document_id: uuid.UUID | None = None
    error_code: str | None = None
    error_message: str | None = None
    chunk_count: int = 0
    size_bytes: int | None = None


@dataclass(slots=True)
class JobContext:
    """Everything a batch needs about its job, resolved once per job."""

    job_id: uuid.UUID
    tenant_id: str
    collection: CollectionInfo
    embedder: Embedder
    chunker: Chunker
    loaders: list[Loader]
    cleaners: list[Cleaner]
    settings: IngestionSettings
    force: bool = False
    loader: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Identifies how documents are made; part of every hash, so a new chain re-indexes.
    pipeline: str = ""


@dataclass(slots=True)
class _Pending:
    item: WorkItem
    outcome: Outcome
    document: Document
    version: store.NewVersion
    chunks: list[Chunk]


Emit = Callable[[Progress], None]
CheckCancelled = Callable[[], Awaitable[bool]]
FetchPayload = Callable[[uuid.UUID], Awaitable[bytes | None]]
Embed = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


class BatchProcessor:
    """Processes the claimed items of one job inside the worker's transaction ``conn``."""

    def __init__(
        self,
        conn: AsyncConnection,
        context: JobContext,
        emit: Emit,
        cancelled: CheckCancelled,
        payload: FetchPayload,
        *,
        embed: Embed | None = None,
    ) -> None:
        self.conn = conn
        self.context = context
        self.emit = emit
        self.cancelled = cancelled
        self.payload = payload
        self.embed = embed or context.embedder.embed
        self._known: dict[str, store.Existing | None] = {}

    async def _existing(self, source: str) -> store.Existing | None:
        if source in self._known:
            return self._known[source]
        return await store.existing(self.conn, self.context.collection.id, source)

    async def run(self, items: Sequence[WorkItem]) -> dict[uuid.UUID, Outcome]:
        outcomes: dict[uuid.UUID, Outcome] = {}
        pending: list[_Pending] = []
        self._known = await store.existing_many(
            self.conn, self.context.collection.id, [item.source for item in items]
        )
        for item in items:
            if await self.cancelled():
                raise JobCancelled()
            if item.kind == "remove" and pending:
                # Items take effect in order: what came before a removal is stored before it.
                await self._flush(pending)
                pending = []
            outcome = outcomes[item.id] = Outcome()
            try:
                pending.extend(await self._prepare(item, outcome))
            except DocumentError as err:
                await self._fail(item, outcome, item.source, err.stage, err)
            except OpenTierError as err:
                await self._fail(item, outcome, item.source, "load", err)
        await self._flush(pending)
        return outcomes

    async def _flush(self, pending: list[_Pending]) -> None:
        """Embed and store the documents prepared so far (near-duplicates first marked or dropped)."""
        pending = await self._near_duplicates(pending)
        vectors = await self._embed(pending)
        if not await self._store_all(pending, vectors):
            for entry, entry_vectors in zip(pending, vectors, strict=True):
                await self._store(entry, entry_vectors)

    async def _near_duplicates(self, pending: list[_Pending]) -> list[_Pending]:
        """Look up the near-duplicates of the prepared documents among the collection's ready ones, in
        one query: with ``near_duplicates = "report"`` each keeps ``near_duplicate_of`` in its metadata,
        with ``"skip"`` it is dropped. (The content hash was taken before: the mark does not change it.)"""
        mode = self.context.settings.near_duplicates
        if mode == "off" or not pending:
            return pending
        twins = await store.near_duplicates(
            self.conn,
            self.context.collection.id,
            [(entry.version.source, entry.version.simhash) for entry in pending],
        )
        if not twins:
            return pending
        kept = []
        for entry in pending:
            twin = twins.get(entry.version.source)
            if twin is None:
                kept.append(entry)
            elif mode == "skip":
                await self._drop(entry.item, entry.outcome, entry.version.source, f"near-duplicate of {twin}")
            else:
                entry.version.metadata["near_duplicate_of"] = twin
                kept.append(entry)
        return kept

    # -- load, clean, chunk ---------------------------------------------------------------------

    async def _prepare(self, item: WorkItem, outcome: Outcome) -> list[_Pending]:
        ctx = self.context
        if item.kind == "remove":
            gone = await store.delete_source(self.conn, ctx.collection.id, item.source)
            outcome.deleted += gone >= 0
            self.emit(Progress(ctx.job_id, item.source, "done", "deleted" if gone >= 0 else "unchanged"))
            return []
        self.emit(Progress(ctx.job_id, item.source, "loading", "in_progress"))
        source, data = await self._source(item)
        outcome.size_bytes = len(data) if data is not None else None
        source_hash = digest(ctx.pipeline, data) if data is not None else None
        known = await self._existing(item.source)
        if (
            not ctx.force
            and known is not None
            and known.status == "ready"
            and source_hash is not None
            and known.source_hash == source_hash
        ):
            outcome.unchanged += 1
            outcome.document_id = known.id
            self.emit(Progress(ctx.job_id, item.source, "done", "unchanged", known.id))
            return []
        loader = self._loader(source)
        ready: list[_Pending] = []
        try:
            async for document in loader.load(source):
                entry = await self._clean_and_chunk(item, outcome, document, source_hash, data)
                if entry is not None:
                    ready.append(entry)
        except Exception as err:
            if not isinstance(err, OpenTierError):
                err = DocumentLoadError(f"{loader.name} loader failed: {type(err).__name__}: {err}")
            seen = ready or outcome.unchanged or outcome.dropped or outcome.failed
            if not seen:
                raise err from None
            # A source of many documents (a records file) keeps the good ones it yielded before.
            await self._fail(item, outcome, item.source, "load", err)
            return ready
        if not ready and not (outcome.unchanged or outcome.dropped or outcome.failed):
            raise DocumentLoadError("the loader found no text in this source", stage="load")
        return ready

    async def _source(self, item: WorkItem) -> tuple[Source, bytes | None]:
        details = item.details
        options = details.get("loader_options") or {}
        metadata = {**self.context.metadata, **(details.get("metadata") or {})}
        if item.kind == "url":
            fetched = await sources.fetch(item.source, self.context.settings)
            media = details.get("media_type") or fetched.media_type or sources.guess_media_type(item.source)
            return Source(
                item.source, media, data=fetched.data, metadata=metadata, options=options
            ), fetched.data
        if item.kind == "path":
            path = details["path"]
            data = await asyncio.to_thread(_read, path, item.source, self.context.settings.max_upload_bytes)
            media = details.get("media_type") or sources.guess_media_type(path)
            return Source(item.source, media, data=data, metadata=metadata, options=options), data
        data = await self.payload(item.id) or b""
        if item.kind == "text":
            return Source(item.source, "text/plain", data=data, metadata=metadata, options=options), data
        media = details.get("media_type") or sources.guess_media_type(details.get("filename") or item.source)
        return Source(item.source, media, data=data, metadata=metadata, options=options), data

    def _loader(self, source: Source) -> Loader:
        chosen = self.context.loader
        for loader in self.context.loaders:
            if (chosen and loader.name == chosen) or (not chosen and loader.accepts(source)):
                return loader
        if chosen:
            raise DocumentLoadError(f"no loader named {chosen!r}")
        names = ", ".join(sorted(loader.name for loader in self.context.loaders)) or "none"
        raise DocumentLoadError(
            f"no loader reads {source.uri!r} (media type {source.media_type or 'unknown'}); "
            f"installed loaders: {names}"
        )

    async def _clean_and_chunk(
        self,
        item: WorkItem,
        outcome: Outcome,
        document: Document,
        source_hash: str | None,
        data: bytes | None,
    ) -> _Pending | None:
        ctx = self.context
        name = document.source or item.source
        if item.kind == "text":
            # A record's title is the client's, or none: the loader's guess (the source id) is noise.
            document.title = item.details.get("title") or None
        self.emit(Progress(ctx.job_id, name, "cleaning", "in_progress"))
        for cleaner in ctx.cleaners:
            try:
                result = await cleaner.clean(document)
            except Exception as err:
                await self._fail(item, outcome, name, "clean", err, cleaner=cleaner.name)
                return None
            if isinstance(result, Dropped):
                await self._drop(item, outcome, name, f"{cleaner.name}: {result.reason}")
                return None
            document = result
        text = document.text
        if not text.strip():
            await self._drop(item, outcome, name, "no text left after cleaning")
            return None
        fingerprint = simhash(text)
        hashed = content_hash(ctx.pipeline, document.title, text, document.metadata)
        known = await self._existing(name)
        single = name == item.source
        if not ctx.force and known is not None and known.status == "ready" and known.content_hash == hashed:
            await store.mark_unchanged(self.conn, known.id, source_hash if single else None)
            outcome.unchanged += 1
            outcome.document_id = known.id
            self.emit(Progress(ctx.job_id, name, "done", "unchanged", known.id))
            return None
        self.emit(Progress(ctx.job_id, name, "chunking", "in_progress"))
        try:
            chunks = await asyncio.to_thread(ctx.chunker.chunk, document)
        except Exception as err:
            await self._fail(item, outcome, name, "chunk", err)
            return None
        version = store.NewVersion(
            tenant_id=ctx.tenant_id,
            collection_id=ctx.collection.id,
            source=name,
            title=document.title,
            media_type=document.media_type,
            content_hash=hashed,
            source_hash=source_hash if single else None,
            simhash=fingerprint,
            size_bytes=len(data) if single and data is not None else None,
            job_id=ctx.job_id,
            metadata=document.metadata,
        )
        return _Pending(item, outcome, document, version, chunks)

    # -- embed and store ------------------------------------------------------------------------

    async def _embed(self, pending: list[_Pending]) -> list[list[list[float]]]:
        texts = [chunk.embed_text for entry in pending for chunk in entry.chunks]
        if not texts:
            return [[] for _ in pending]
        for entry in pending:
            self.emit(Progress(self.context.job_id, entry.version.source, "embedding", "in_progress"))
        embedder = self.context.embedder
        # Several embedder batches per call keep sorting by length worthwhile; cancel between calls.
        step = max(embedder.batch_size * 8, 256)
        vectors: list[list[float]] = []
        started = time.perf_counter()
        for start in range(0, len(texts), step):
            if await self.cancelled():
                raise JobCancelled()
            vectors.extend(await self.embed(texts[start : start + step]))
        log.debug("embedded %d chunks in %.2fs", len(texts), time.perf_counter() - started)
        if len(vectors) != len(texts):
            raise DocumentError(
                f"embedder {embedder.name} returned {len(vectors)} vectors for {len(texts)} texts",
                stage="embed",
            )
        grouped: list[list[list[float]]] = []
        offset = 0
        for entry in pending:
            grouped.append(vectors[offset : offset + len(entry.chunks)])
            offset += len(entry.chunks)
        return grouped

    async def _store_all(self, pending: list[_Pending], vectors: list[list[list[float]]]) -> bool:
        """Write the whole batch at once; False (nothing written) sends it down the one-by-one path."""
        sources = [entry.version.source for entry in pending]
        if len(pending) < 2 or len(set(sources)) != len(sources):
            return False
        ctx = self.context
        try:
            async with self.conn.begin_nested():
                written = await store.write_many(
                    self.conn,
                    [(e.version, e.chunks, v) for e, v in zip(pending, vectors, strict=True)],
                    ctx.collection.language,
                )
        except Exception as err:
            log.info("writing %d documents at once failed (%s); writing them one by one", len(pending), err)
            return False
        for entry, (document_id, created) in zip(pending, written, strict=True):
            self._stored(entry, document_id, created)
        return True

    def _stored(self, entry: _Pending, document_id: uuid.UUID, created: bool) -> None:
        outcome = entry.outcome
        outcome.created += created
        outcome.updated += not created
        outcome.chunks += len(entry.chunks)
        outcome.document_id = document_id
        self.emit(
            Progress(
                self.context.job_id,
                entry.version.source,
                "done",
                "created" if created else "updated",
                document_id,
                chunk_count=len(entry.chunks),
                size_bytes=entry.version.size_bytes,
            )
        )

    async def _store(self, entry: _Pending, vectors: list[list[float]]) -> None:
        ctx = self.context
        self.emit(Progress(ctx.job_id, entry.version.source, "storing", "in_progress"))
        try:
            async with self.conn.begin_nested():
                document_id, created = await store.write(
                    self.conn, entry.version, entry.chunks, vectors, ctx.collection.language
                )
        except Exception as err:
            await self._fail(entry.item, entry.outcome, entry.version.source, "store", err)
            return
        self._stored(entry, document_id, created)

    # -- failures -------------------------------------------------------------------------------

    async def _fail(
        self,
        item: WorkItem,
        outcome: Outcome,
        source: str,
        stage: str,
        err: BaseException,
        *,
        cleaner: str | None = None,
    ) -> None:
        code = err.code if isinstance(err, OpenTierError) else "document_failed"
        message = str(err) if isinstance(err, OpenTierError) else f"{type(err).__name__}: {err}"
        if cleaner is not None:
            message = f"cleaner {cleaner}: {message}"
        log.info("%s failed at %s: %s", source, stage, message)
        async with self.conn.begin_nested():
            document_id = await store.record_failure(
                self.conn,
                tenant_id=self.context.tenant_id,
                collection_id=self.context.collection.id,
                source=source,
                job_id=self.context.job_id,
                stage=stage,
                message=message,
            )
        outcome.failed += 1
        outcome.stage, outcome.error_code, outcome.error_message = stage, code, message
        outcome.document_id = outcome.document_id or document_id
        self.emit(Progress(self.context.job_id, source, stage, "failed", document_id, code, message))

    async def _drop(self, item: WorkItem, outcome: Outcome, source: str, reason: str) -> None:
        async with self.conn.begin_nested():
            document_id = await store.record_failure(
                self.conn,
                tenant_id=self.context.tenant_id,
                collection_id=self.context.collection.id,
                source=source,
                job_id=self.context.job_id,
                stage="clean",
                message=reason,
                status="skipped",
            )
        outcome.dropped += 1
        outcome.document_id = outcome.document_id or document_id
        self.emit(Progress(self.context.job_id, source, "clean", "dropped", document_id, "dropped", reason))


def _read(path: str, name: str, limit: int) -> bytes:
    """A file on the host, whole; one over ``limit`` (ingestion.max_upload_bytes, as for an upload) is
    refused unread, so that no file of a folder can exhaust the host's memory."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise SourceTooLargeError(
                    f"{name} has {size} bytes, more than this host reads "
                    f"(ingestion.max_upload_bytes = {limit})"
                )
            data = handle.read(limit + 1)
    except OSError as err:
        raise DocumentLoadError(f"cannot read {path}: {err.strerror}") from None
    if len(data) > limit:  # it grew while it was read
        raise SourceTooLargeError(
            f"{name} has more than {limit} bytes, more than this host reads (ingestion.max_upload_bytes)"
        )
    return data
