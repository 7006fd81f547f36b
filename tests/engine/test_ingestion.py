"""Ingestion against the real PostgreSQL: idempotent, atomic, failure-isolated, cancellable."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import IngestionSettings
from opentier.engine.collections import CollectionInfo, Collections
from opentier.engine.jobs import Ingestion, ItemSpec, JobInfo, JobOptions
from opentier.engine.pipeline import Progress
from opentier.errors import NotFoundError, SourceRefusedError
from opentier.plugin_manager import PluginSelection, load_plugins

from .helpers import HashEmbedder, plugin


class World:
    def __init__(self, ingestion: Ingestion, collection: CollectionInfo, root: Path, embedder: HashEmbedder):
        self.ingestion = ingestion
        self.collection = collection
        self.root = root
        self.embedder = embedder
        self.tenant = collection.tenant_id

    async def ingest(self, path: Path | None = None, **options: object) -> object:
        opts = JobOptions(**options)  # type: ignore[arg-type]
        existing = await self.ingestion.sources_in(self.tenant, self.collection.id)
        items = self.ingestion.path_items(str(path or self.root), opts, existing)
        job = await self.ingestion.create_job(
            self.tenant, self.collection.id, {"path": str(path)}, opts, items
        )
        return await asyncio.wait_for(self.ingestion.wait(self.tenant, job.id), 30)


@pytest_asyncio.fixture
async def world(db_engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[World]:
    embedder = HashEmbedder()
    system = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners", "layout-cleaners"]),
        extra=[("test", plugin(embedder))],
    )
    settings = IngestionSettings(roots=[tmp_path], workers=2, chunk_tokens=64, chunk_overlap_tokens=8)
    collections = Collections(db_engine, system.registry, "test-hash")
    ingestion = Ingestion(db_engine, settings, system.registry, collections)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    collection = await collections.create(tenant, "docs")
    await ingestion.start()
    try:
        yield World(ingestion, collection, tmp_path, embedder)
    finally:
        await ingestion.stop()


def write_corpus(root: Path, count: int = 6) -> None:
    for i in range(count):
        (root / f"doc{i}.txt").write_text(
            f"Document {i}.\n\n" + " ".join(f"Sentence {j} about wings and lift {i}." for j in range(30))
        )


async def chunk_ids(engine: AsyncEngine, collection: uuid.UUID) -> dict[str, set[uuid.UUID]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT d.source, c.id FROM intelligence.chunks c JOIN intelligence.documents d "
                "ON d.id = c.document_id WHERE c.collection_id = :c"
            ),
            {"c": collection},
        )
        found: dict[str, set[uuid.UUID]] = {}
        for source, chunk_id in rows:
            found.setdefault(source, set()).add(chunk_id)
        return found


async def test_folder_ingest_then_unchanged_then_one_changed(world: World, db_engine: AsyncEngine) -> None:
    write_corpus(world.root)
    job = await world.ingest()
    assert job.status == "succeeded"
    assert (job.counts.created, job.counts.failed) == (6, 0)
    first = await chunk_ids(db_engine, world.collection.id)
    assert set(first) == {f"doc{i}.txt" for i in range(6)}
    assert all(len(ids) > 1 for ids in first.values())

    texts_before = world.embedder.texts
    again = await world.ingest()
    assert (again.counts.unchanged, again.counts.created, again.counts.chunks_written) == (6, 0, 0)
    assert await chunk_ids(db_engine, world.collection.id) == first
    assert world.embedder.texts == texts_before, "an unchanged folder must not be embedded again"

    (world.root / "doc3.txt").write_text("Document 3 rewritten.\n\nNew content about propellers.")
    changed = await world.ingest()
    assert (changed.counts.updated, changed.counts.unchanged) == (1, 5)
    after = await chunk_ids(db_engine, world.collection.id)
    for source in first:
        if source == "doc3.txt":
            assert after[source].isdisjoint(first[source]) and len(after[source]) == 1
        else:
            assert after[source] == first[source]


async def test_a_broken_file_fails_alone(world: World, db_engine: AsyncEngine) -> None:
    write_corpus(world.root, 3)
    (world.root / "scan.broken").write_bytes(b"%PDF-1.4 garbage")
    (world.root / "image.xyz").write_bytes(b"\x89PNG")
    job = await world.ingest()
    assert job.status == "succeeded"
    assert (job.counts.created, job.counts.failed) == (3, 2)
    async with db_engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT source, status, error_stage, error_message FROM intelligence.documents "
                    "WHERE collection_id = :c AND status = 'failed' ORDER BY source"
                ),
                {"c": world.collection.id},
            )
        ).all()
    assert [(r.source, r.status, r.error_stage) for r in rows] == [
        ("image.xyz", "failed", "load"),
        ("scan.broken", "failed", "load"),
    ]
    assert "corrupt" in rows[1].error_message
    assert "no loader reads" in rows[0].error_message


async def test_delete_missing_takes_chunks_along(world: World, db_engine: AsyncEngine) -> None:
    write_corpus(world.root, 3)
    await world.ingest()
    (world.root / "doc1.txt").unlink()
    job = await world.ingest(delete_missing=True)
    assert (job.counts.deleted, job.counts.unchanged) == (1, 2)
    assert set(await chunk_ids(db_engine, world.collection.id)) == {"doc0.txt", "doc2.txt"}


async def test_streamed_records_and_removal(world: World, db_engine: AsyncEngine) -> None:
    ingestion = world.ingestion
    job = await ingestion.create_job(
        world.tenant, world.collection.id, {"stream": True}, JobOptions(), [], input_complete=False
    )
    nxt = await ingestion.add_items(
        world.tenant,
        job.id,
        0,
        [
            ItemSpec("text", f"ticket/{i}", f"Ticket {i}: the flap motor {i} hums.".encode())
            for i in range(50)
        ],
    )
    nxt = await ingestion.add_items(world.tenant, job.id, nxt, [ItemSpec("remove", "ticket/7")])
    await ingestion.close_input(world.tenant, job.id)
    done = await asyncio.wait_for(ingestion.wait(world.tenant, job.id), 30)
    assert done.status == "succeeded"
    assert done.counts.items_total == done.counts.items_done == 51
    sources = set(await chunk_ids(db_engine, world.collection.id))
    assert len(sources) == 49 and "ticket/7" not in sources


async def test_cancel_stops_a_long_job(db_engine: AsyncEngine, tmp_path: Path) -> None:
    slow = HashEmbedder(delay=0.3)
    system = load_plugins(selection=PluginSelection(allow=["text"]), extra=[("test", plugin(slow))])
    settings = IngestionSettings(roots=[tmp_path], workers=1, batch_items=2, cleaners=[])
    collections = Collections(db_engine, system.registry, "test-hash")
    ingestion = Ingestion(db_engine, settings, system.registry, collections)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    collection = await collections.create(tenant, "slow")
    write_corpus(tmp_path, 60)
    items = ingestion.path_items(str(tmp_path), JobOptions())
    await ingestion.start()
    try:
        job = await ingestion.create_job(tenant, collection.id, {}, JobOptions(), items)
        while (await ingestion.get_job(tenant, job.id)).counts.items_done < 2:
            await asyncio.sleep(0.05)
        asked = time.monotonic()
        cancelled = await ingestion.cancel_job(tenant, job.id)
        assert cancelled.status == "cancelled"
        calls = slow.calls
        await asyncio.sleep(1.5)
        assert slow.calls <= calls + 1, "work went on after cancel"
        final = await ingestion.get_job(tenant, job.id)
        assert final.counts.items_done == final.counts.items_total  # nothing left pending
        assert final.counts.created < 60
        assert time.monotonic() - asked < 5
    finally:
        await ingestion.stop()


async def test_jobs_are_scoped_by_tenant(world: World) -> None:
    write_corpus(world.root, 1)
    job = await world.ingest()
    with pytest.raises(NotFoundError):
        await world.ingestion.get_job("another-tenant", job.id)
    page = await world.ingestion.list_jobs("another-tenant")
    assert page.items == []
    mine = await world.ingestion.list_jobs(world.tenant)
    assert [j.id for j in mine.items] == [job.id]


def test_paths_outside_the_roots_are_refused(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(SourceRefusedError, match="outside the folders"):
        world.ingestion.path_items(str(elsewhere), JobOptions())
    with pytest.raises(SourceRefusedError, match="does not exist"):
        world.ingestion.path_items(str(world.root / "missing"), JobOptions())


async def test_near_duplicates_are_reported_or_skipped(db_engine: AsyncEngine, tmp_path: Path) -> None:
    text = " ".join(f"The wing section {j} was tested in the tunnel at speed {j}." for j in range(40))
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text(text.replace("speed 7.", "speed 7!"))
    (tmp_path / "c.txt").write_text("Something else entirely about rotor blades and helicopters.")
    for mode, expected_b in (("report", "ready"), ("skip", "skipped")):
        system = load_plugins(selection=PluginSelection(allow=["text"]), extra=[("test", plugin())])
        settings = IngestionSettings(roots=[tmp_path], near_duplicates=mode, cleaners=[])  # type: ignore[arg-type]
        collections = Collections(db_engine, system.registry, "test-hash")
        ingestion = Ingestion(db_engine, settings, system.registry, collections)
        tenant = f"tenant-{uuid.uuid4().hex[:8]}"
        collection = await collections.create(tenant, "dups")
        # a.txt first, so that b.txt is the later near-copy
        first = ingestion.path_items(str(tmp_path / "a.txt"), JobOptions())
        rest = [i for i in ingestion.path_items(str(tmp_path), JobOptions()) if i.source != "a.txt"]
        await ingestion.start()
        try:
            for items in (first, rest):
                job = await ingestion.create_job(tenant, collection.id, {}, JobOptions(), items)
                await asyncio.wait_for(ingestion.wait(tenant, job.id), 30)
        finally:
            await ingestion.stop()
        async with db_engine.connect() as conn:
            rows = {
                r.source: r
                for r in await conn.execute(
                    sa.text(
                        "SELECT source, status, metadata, error_message FROM intelligence.documents "
                        "WHERE collection_id = :c"
                    ),
                    {"c": collection.id},
                )
            }
        assert rows["a.txt"].status == rows["c.txt"].status == "ready"
        assert "near_duplicate_of" not in rows["c.txt"].metadata
        assert rows["b.txt"].status == expected_b
        if mode == "report":
            assert rows["b.txt"].metadata["near_duplicate_of"] == "a.txt"
        else:
            assert "near-duplicate of a.txt" in rows["b.txt"].error_message


async def test_stored_chunks_keep_heading_path_span_metadata_and_vector(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    """What a citation needs survives the batched write: headings, spans, metadata, the vector."""
    embedder = HashEmbedder()
    system = load_plugins(
        selection=PluginSelection(allow=["text", "markdown"]), extra=[("test", plugin(embedder))]
    )
    settings = IngestionSettings(roots=[tmp_path], workers=1, cleaners=[])
    collections = Collections(db_engine, system.registry, "test-hash")
    ingestion = Ingestion(db_engine, settings, system.registry, collections)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    collection = await collections.create(tenant, "cited")
    (tmp_path / "wings.md").write_text(
        "# Wings\n\n## Flutter\n\nFlutter starts at high speed.\n\n## Lift\n\nLift grows with angle.\n"
    )
    for i in range(3):
        (tmp_path / f"note{i}.txt").write_text(f"Note {i} on drag.")
    options = JobOptions(metadata={"year": 2024})
    await ingestion.start()
    try:
        job = await ingestion.create_job(
            tenant, collection.id, {}, options, ingestion.path_items(str(tmp_path), options)
        )
        job = await asyncio.wait_for(ingestion.wait(tenant, job.id), 30)
    finally:
        await ingestion.stop()
    assert job.counts.created == 4
    async with db_engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT c.heading_path, c.text, c.char_start, c.char_end, c.metadata, "
                    "vector_dims(c.embedding), c.tsv @@ to_tsquery('english', 'flutter') "
                    "FROM intelligence.chunks c JOIN intelligence.documents d ON d.id = c.document_id "
                    "WHERE d.collection_id = :c AND d.source = 'wings.md' ORDER BY c.ordinal"
                ),
                {"c": collection.id},
            )
        ).all()
    assert [list(r[0]) for r in rows] == [["Wings", "Flutter"], ["Wings", "Lift"]]
    assert rows[0][1] == "Flutter starts at high speed."
    assert all(r[3] - r[2] == len(r[1]) for r in rows)
    assert all(r[4]["year"] == 2024 for r in rows)
    assert all(r[5] == embedder.dimensions for r in rows)
    assert [r[6] for r in rows] == [True, False]


async def test_a_follower_subscribed_before_the_job_sees_every_event_of_a_job_done_at_once(
    world: World,
) -> None:
    """A small job may be taken and finished by a worker before ``create_job`` returns (the Ingest
    call then used to stream a summary without the documents' events): a follower that subscribes
    with the job's id first, as the Ingest call does, gets each document's outcome anyway."""
    write_corpus(world.root, count=2)
    opts = JobOptions()
    items = world.ingestion.path_items(str(world.root), opts, [])
    job_id = uuid.uuid4()
    with world.ingestion.events.watch(job_id) as queue:
        job = await world.ingestion.create_job(
            world.tenant, world.collection.id, {"path": str(world.root)}, opts, items, job_id=job_id
        )
        assert job.id == job_id
        # The job ends before anyone reads its events.
        await asyncio.wait_for(world.ingestion.wait(world.tenant, job_id), 30)
        events = [event async for event in world.ingestion.follow(world.tenant, job_id, queue)]
    *progress, summary = events
    assert isinstance(summary, JobInfo) and summary.status == "succeeded"
    created = {
        event.source: event.document_id
        for event in progress
        if isinstance(event, Progress) and event.status == "created"
    }
    assert sorted(created) == ["doc0.txt", "doc1.txt"] and all(created.values())
