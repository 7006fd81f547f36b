"""`opentier eval` end to end: the real executable, on the test database, with the installed plugins
(the MiniLM embedder and the fulltext, vector and hybrid retrievers), on a small BEIR collection whose
answers are unambiguous: each query asks about one document's own subject in that document's words."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

OPENTIER = Path(sys.executable).with_name("opentier")

DOCUMENTS = {
    "penguins": (
        "Emperor penguins",
        "Emperor penguins breed on the Antarctic sea ice in the depth of the polar winter, the males "
        "huddling together to keep the egg warm while the females feed at sea.",
    ),
    "volcano": (
        "Volcanic eruptions",
        "Magma rises through the crust and erupts from the crater of a volcano as lava, ash and gas.",
    ),
    "sourdough": (
        "Sourdough bread",
        "Sourdough bread is leavened by a starter of wild yeast and lactobacilli, which gives the loaf "
        "its sour, tangy flavour.",
    ),
    "chess": (
        "The Queen's Gambit",
        "The Queen's Gambit is a chess opening in which White offers a pawn to gain control of the centre.",
    ),
    "photosynthesis": (
        "Photosynthesis",
        "Green plants turn sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts.",
    ),
    "bitcoin": (
        "Bitcoin mining",
        "Bitcoin miners race to solve proof-of-work puzzles; the winner appends a block to the blockchain "
        "and earns newly minted coins.",
    ),
    "tides": (
        "Ocean tides",
        "The gravity of the Moon and the Sun raises the tides of the oceans twice a day.",
    ),
    "violin": ("Violin making", "A violin's spruce top and maple back are carved by hand and varnished."),
}
QUERIES = {
    "q-penguins": ("where do emperor penguins breed in winter", "penguins"),
    "q-volcano": ("how does a volcano erupt lava and ash", "volcano"),
    "q-sourdough": ("what leavens sourdough bread", "sourdough"),
    "q-chess": ("queen's gambit chess opening pawn", "chess"),
    "q-photosynthesis": ("how do plants make glucose from sunlight", "photosynthesis"),
    "q-bitcoin": ("how are bitcoin blocks mined with proof of work", "bitcoin"),
}


def write_dataset(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for doc_id, (title, text) in DOCUMENTS.items():
            corpus.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as queries:
        for query_id, (text, _answer) in QUERIES.items():
            queries.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{doc}\t1" for q, (_t, doc) in QUERIES.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


@dataclass
class Done:
    code: int
    out: str
    err: str


async def opentier(database_url: str, cwd: Path, *args: str) -> Done:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    url = make_url(database_url)
    env["OPENTIER_DATABASE__URL"] = url._replace(password=None).render_as_string(hide_password=False)
    if url.password:
        env["OPENTIER_DATABASE__PASSWORD"] = url.password
    env.update(OPENTIER_DATA_DIR=str(cwd / "state"), COLUMNS="200")
    process = await asyncio.create_subprocess_exec(
        str(OPENTIER),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


async def scratch_collections(db_engine: AsyncEngine, dataset: Path) -> list[tuple[str, int]]:
    """(tenant, ready documents) of the scratch collections an evaluation of ``dataset`` left."""
    async with db_engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT c.tenant_id, count(d.id) FROM intelligence.collections c "
                "LEFT JOIN intelligence.documents d ON d.collection_id = c.id AND d.status = 'ready' "
                "WHERE c.description = :description GROUP BY c.id"
            ),
            {"description": f"opentier eval of {dataset}"},
        )
        return [(row[0], int(row[1])) for row in rows]


async def test_every_retriever_finds_each_answer_first(
    database_url: str, db_engine: AsyncEngine, tmp_path: Path
) -> None:
    dataset = write_dataset(tmp_path / "tiny")
    done = await opentier(database_url, tmp_path, "eval", "--dataset", str(dataset), "--json", "--keep")
    assert done.code == 0, done.err
    report = json.loads(done.out)

    assert report["dataset"] == {
        "name": "tiny",
        "layout": "beir",
        "path": str(dataset),
        "queries": 6,
        "notes": [],
    }
    assert report["relevance"] == "binary"
    ingestion = report["ingestion"]
    assert (ingestion["documents"], ingestion["indexed"], ingestion["failed"]) == (8, 8, 0)
    assert ingestion["chunks"] >= 8
    assert [row["retriever"] for row in report["retrievers"]] == ["fulltext", "vector", "hybrid"]
    for row in report["retrievers"]:
        # Each query's one relevant document comes first, whoever ranks.
        assert (row["ndcg@10"], row["recall@10"], row["recall@100"], row["mrr@10"]) == (1.0, 1.0, 1.0, 1.0), (
            row
        )
        assert row["queries"] == 6
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["seconds"] > 0
    assert report["query_embedding_ms"]["p50"] > 0

    # --keep leaves the scratch collection, with every document, in the tenant it names.
    kept = report["collection"]
    assert kept["kept"] is True
    assert await scratch_collections(db_engine, dataset) == [(kept["tenant_id"], 8)]
    async with db_engine.begin() as conn:
        await conn.execute(
            sa.text("DELETE FROM intelligence.collections WHERE tenant_id = :tenant"),
            {"tenant": kept["tenant_id"]},
        )


async def test_the_table_and_the_scratch_collection_is_deleted(
    database_url: str, db_engine: AsyncEngine, tmp_path: Path
) -> None:
    dataset = write_dataset(tmp_path / "tiny")
    done = await opentier(
        database_url,
        tmp_path,
        "eval",
        "--dataset",
        str(dataset),
        "--retrievers",
        "fulltext",
        "--limit-queries",
        "2",
    )
    assert done.code == 0, done.err
    assert "tiny (beir): 2 queries, binary relevance" in done.out
    assert re.search(
        r"│ fulltext\s+" + r"│\s+1\.000\s+" * 4 + r"│\s+2\s+│\s+[\d.]+\s+│\s+[\d.]+\s+│", done.out
    ), done.out
    assert "vector" not in done.out
    assert re.search(
        r"ingestion: 8 documents \(8 indexed, 0 dropped, 0 failed\) into \d+ chunks in [\d.]+ s", done.out
    )
    assert "query embedding (minilm, one query at a time): p50" in done.out
    assert await scratch_collections(db_engine, dataset) == []


async def test_unknown_retriever_and_bad_folder_are_refused_before_any_work(
    database_url: str, db_engine: AsyncEngine, tmp_path: Path
) -> None:
    dataset = write_dataset(tmp_path / "tiny")
    done = await opentier(
        database_url, tmp_path, "eval", "--dataset", str(dataset), "--retrievers", "vector,bm42"
    )
    assert done.code == 2
    assert "error [component_unknown]" in done.err and "bm42" in done.err
    assert "fulltext" in done.err and "hybrid" in done.err  # what is installed
    assert await scratch_collections(db_engine, dataset) == []

    (tmp_path / "other").mkdir()
    done = await opentier(database_url, tmp_path, "eval", "--dataset", str(tmp_path / "other"))
    assert done.code == 2
    assert "error [dataset_invalid]" in done.err and "neither a BEIR collection" in done.err
