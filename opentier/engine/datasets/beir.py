"""The BEIR layout: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Documents are ``{"_id", "title", "text"}`` lines, queries ``{"_id", "text"}`` lines, and judgments a
tab-separated ``query-id corpus-id score`` file with a header line. As BEIR's own loader does, only
the queries judged in the chosen split are evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentier.engine.datasets.judged import (
    DatasetError,
    JudgedCollection,
    JudgedDocument,
    JudgedQuery,
    require_file,
)

CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
QRELS_DIR = "qrels"
DEFAULT_SPLIT = "test"


def is_beir(folder: Path) -> bool:
    return (folder / CORPUS).is_file()


def splits(folder: Path) -> list[str]:
    """The splits that have judgments (``qrels/<split>.tsv``), sorted."""
    return sorted(path.stem for path in (folder / QRELS_DIR).glob("*.tsv"))


def load(folder: Path, split: str = DEFAULT_SPLIT) -> JudgedCollection:
    corpus = require_file(folder / CORPUS)
    qrels_path = folder / QRELS_DIR / f"{split}.tsv"
    if not qrels_path.is_file():
        found = ", ".join(splits(folder)) or "none"
        raise DatasetError(f"{folder} has no judgments for split {split!r} ({qrels_path}); splits: {found}")
    qrels = read_qrels(qrels_path)
    every_query = {query.id: query for query in _queries(require_file(folder / QUERIES))}
    queries = [query for query_id, query in every_query.items() if query_id in qrels]
    notes: list[str] = []
    unknown = sorted(set(qrels) - set(every_query))
    if unknown:
        notes.append(f"{len(unknown)} judged queries are not in {QUERIES} and are skipped: {unknown[:5]}")
        qrels = {query_id: judged for query_id, judged in qrels.items() if query_id in every_query}
    if not queries:
        raise DatasetError(f"no query of {QUERIES} is judged in {qrels_path}")
    return JudgedCollection(
        name=folder.resolve().name,
        layout="beir",
        path=folder,
        queries=queries,
        qrels=qrels,
        read_documents=lambda: _documents(corpus),
        notes=tuple(notes),
    )


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Query id → document id → grade; the header line (any first line whose score is not a
    number) is skipped, and a document judged twice keeps its last grade."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 3:
                parts = line.split()
            if len(parts) < 3:
                raise DatasetError(f"{path}:{number}: expected `query-id corpus-id score`, got {line!r}")
            query_id, doc_id, score = parts[0].strip(), parts[1].strip(), parts[-1].strip()
            try:
                grade = int(float(score))
            except ValueError:
                if number == 1:
                    continue  # the header
                raise DatasetError(f"{path}:{number}: score {score!r} is not a number") from None
            qrels.setdefault(query_id, {})[doc_id] = grade
    return qrels


def _queries(path: Path) -> Iterator[JudgedQuery]:
    for number, record in _jsonl(path):
        yield JudgedQuery(_id(record, path, number), str(record.get("text") or ""))


def _documents(path: Path) -> Iterator[JudgedDocument]:
    for number, record in _jsonl(path):
        yield JudgedDocument(
            _id(record, path, number), str(record.get("title") or ""), str(record.get("text") or "")
        )


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{number}: not a JSON object: {err}") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: not a JSON object")
            yield number, record


def _id(record: dict[str, Any], path: Path, number: int) -> str:
    value = record.get("_id")
    if value is None or str(value) == "":
        raise DatasetError(f"{path}:{number}: the record has no `_id`")
    return str(value)
