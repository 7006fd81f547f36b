"""The Cranfield collection (1,400 aeronautics abstracts, 225 judged queries), as distributed.

Records start with ``.I <id>`` and hold fields ``.T`` (title), ``.A``, ``.B`` and ``.W`` (text, which
repeats the title first). Judgments number queries by their position in ``cran.qry`` (1..225), not
by their ``.I``; codes 1-4 are relevant, -1 is not (binary relevance).

:func:`load` gives the collection as a :class:`~opentier.engine.datasets.judged.JudgedCollection`,
with grades for graded metrics: code 1 (complete answer) is grade 4, down to code 4 (minimum
interest), grade 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from opentier.engine.datasets.judged import (
    JudgedCollection,
    JudgedDocument,
    JudgedQuery,
    require_file,
)

DOCUMENTS = "cran.all.1400"
QUERIES = "cran.qry"
JUDGMENTS = "cranqrel"
#: Cleverdon's codes 1 (complete answer) to 4 (minimum interest), as grades (higher = better).
GRADES = {"1": 4, "2": 3, "3": 2, "4": 1}

_FIELD = re.compile(r"^\.([ITABW])\b\s*(.*)$")


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    title: str
    text: str


def _records(path: Path) -> Iterator[dict[str, str]]:
    current: dict[str, str] | None = None
    field: str | None = None
    lines: list[str] = []

    def close() -> None:
        if current is not None and field is not None:
            current[field] = " ".join(" ".join(lines).split())

    for raw in path.read_text(encoding="latin-1").splitlines():
        line = raw.rstrip()
        match = _FIELD.match(line)
        if match:
            close()
            key, rest = match.groups()
            if key == "I":
                if current is not None:
                    yield current
                current, field, lines = {"I": rest.strip()}, None, []
                continue
            field, lines = key, [rest] if rest else []
            continue
        lines.append(line)
    close()
    if current is not None:
        yield current


def documents(folder: Path) -> Iterator[Record]:
    """The 1,400 documents; ``text`` is the ``.W`` field (documents 471 and 995 are empty)."""
    for record in _records(folder / DOCUMENTS):
        yield Record(record["I"], record.get("T", ""), record.get("W", ""))


def queries(folder: Path) -> list[Record]:
    """The 225 queries, with ids 1..225 by position (as the judgments number them)."""
    return [
        Record(str(position), "", record.get("W", ""))
        for position, record in enumerate(_records(folder / QUERIES), start=1)
    ]


def judgments(folder: Path) -> dict[str, set[str]]:
    """Query id → ids of the relevant documents (codes 1 to 4)."""
    relevant: dict[str, set[str]] = {}
    for line in (folder / JUDGMENTS).read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] != "-1":
            relevant.setdefault(parts[0], set()).add(parts[1])
    return relevant


def qrels(folder: Path) -> dict[str, dict[str, int]]:
    """Query id → document id → grade (see :data:`GRADES`); code -1 lines are dropped."""
    graded: dict[str, dict[str, int]] = {}
    for line in (folder / JUDGMENTS).read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in GRADES:
            graded.setdefault(parts[0], {})[parts[1]] = GRADES[parts[2]]
    return graded


def is_cranfield(folder: Path) -> bool:
    return (folder / DOCUMENTS).is_file()


def load(folder: Path) -> JudgedCollection:
    """The whole collection: 1,400 documents, the 225 queries (ids by position), graded judgments."""
    for name in (DOCUMENTS, QUERIES, JUDGMENTS):
        require_file(folder / name)
    judged = qrels(folder)
    return JudgedCollection(
        name="cranfield",
        layout="cranfield",
        path=folder,
        queries=[JudgedQuery(query.id, query.text) for query in queries(folder) if query.id in judged],
        qrels=judged,
        read_documents=lambda: (JudgedDocument(doc.id, doc.title, doc.text) for doc in documents(folder)),
    )
