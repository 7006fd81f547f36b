"""Benchmark: the whole ingestion pipeline on Cranfield against the raw embedder, in one run.

    .venv/bin/python bench/ingest_cranfield.py [--embedder minilm] [--workers N] [--batch-items N]
        [--repeat 1]

Ingests the 1,400 Cranfield abstracts (title + " " + text, as BEIR does) as streamed records into a
scratch collection of a temporary embedded PostgreSQL (or OPENTIER_BENCH_DATABASE_URL), then embeds
exactly what the pipeline embedded (each stored chunk under its title and headings line) with the same
embedder, alone, in calls of the same size. Prints chunks/s
for both and their ratio: the pipeline's cost (loading, cleaning, chunking, hashing, storing,
bookkeeping) is what the ratio lacks to 1.0. The goal is a ratio of at least 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from opentier.components import ComponentKind, Embedder
from opentier.config import IngestionSettings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.tenancy import enforce_tenancy, internal_scope
from opentier.engine.chunker import context_prefix
from opentier.engine.collections import Collections
from opentier.engine.datasets import cranfield
from opentier.engine.jobs import Ingestion, ItemSpec, JobOptions
from opentier.plugin_manager import PluginSelection, load_plugins

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"


async def run(args: argparse.Namespace, url: str) -> None:
    await migrate(url)
    settings = IngestionSettings(
        workers=args.workers, batch_items=args.batch_items or IngestionSettings().batch_items
    )
    engine = create_async_engine(url, pool_size=settings.worker_count() + 4)
    enforce_tenancy(engine)  # as the host: row-level security on, the workers set their scopes
    system = load_plugins(selection=PluginSelection())
    embedder = system.registry.get(ComponentKind.EMBEDDER, args.embedder)
    assert isinstance(embedder, Embedder)
    collections = Collections(engine, system.registry, args.embedder)
    ingestion = Ingestion(engine, settings, system.registry, collections)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    records = [
        ItemSpec("text", f"cran/{doc.id}", f"{doc.title} {doc.text}".strip().encode())
        for doc in cranfield.documents(DATA)
    ]
    # Warm the model up (lazy loading) so neither side pays for it.
    await embedder.embed(["warm up"] * embedder.batch_size)
    await ingestion.start()
    try:
        pipeline_seconds = []
        for round_number in range(args.repeat):
            collection = await collections.create(tenant, f"cranfield-{round_number}")
            started = time.perf_counter()
            job = await ingestion.create_job(
                tenant, collection.id, {"bench": "cranfield"}, JobOptions(), records
            )
            job = await ingestion.wait(tenant, job.id)
            pipeline_seconds.append(time.perf_counter() - started)
    finally:
        await ingestion.stop()
    counts = job.counts
    async with engine.connect() as conn:
        # Exactly what the pipeline embedded: each chunk's text under its title and headings line.
        texts = [
            f"{prefix}\n{text}" if (prefix := context_prefix(title, tuple(headings))) else text
            for text, title, headings in await conn.execute(
                sa.text(
                    "SELECT c.text, d.title, c.heading_path FROM intelligence.chunks c "
                    "JOIN intelligence.documents d ON d.id = c.document_id "
                    "WHERE c.collection_id = :c ORDER BY c.document_id, c.ordinal"
                ),
                {"c": collection.id},
            )
        ]
    await engine.dispose()
    # The raw embedder on the same chunks, in calls as large as the pipeline's.
    step = max(embedder.batch_size * 8, 256)
    raw_seconds = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        for start in range(0, len(texts), step):
            await embedder.embed(texts[start : start + step])
        raw_seconds.append(time.perf_counter() - started)
    pipeline = min(pipeline_seconds)
    raw = min(raw_seconds)
    print(f"documents: {counts.created} created, {counts.dropped} dropped (empty), {counts.failed} failed")
    print(f"chunks: {len(texts)} (embedder {embedder.name} {embedder.version}, {embedder.dimensions} dims)")
    chunk_rate, doc_rate = len(texts) / pipeline, counts.created / pipeline
    print(f"pipeline: {pipeline:7.2f} s  {chunk_rate:8.1f} chunks/s  {doc_rate:7.1f} docs/s")
    print(f"raw embedder: {raw:7.2f} s  {len(texts) / raw:8.1f} chunks/s")
    print(f"ratio pipeline/raw: {raw / pipeline:.3f}  (goal >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--workers", type=int, default=0, help="ingestion.workers (default 0: cores + 1)")
    parser.add_argument("--batch-items", type=int, default=0, help="ingestion.batch_items (0: default)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each side; the best is kept")
    args = parser.parse_args()
    if not (DATA / "cran.all.1400").is_file():
        print(f"skipped: the Cranfield collection is not at {DATA}", file=sys.stderr)
        return
    external = os.environ.get("OPENTIER_BENCH_DATABASE_URL")
    if external:
        with internal_scope():
            asyncio.run(run(args, external))
        return
    with tempfile.TemporaryDirectory(prefix="opentier-bench-") as folder:
        server = EmbeddedPostgres(Path(folder) / "pg", database="bench")
        server.start()
        try:
            with internal_scope():
                asyncio.run(run(args, str(server.url().render_as_string(hide_password=False))))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
