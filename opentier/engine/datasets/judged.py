"""A judged retrieval collection, whatever its layout: documents, queries and relevance judgments.

``opentier eval`` and the benchmarks read every layout (BEIR, Cranfield) into this one shape, so that
ingestion, search and the metrics never depend on where the data came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from opentier.errors import InvalidRequestError

#: Query id → document id → grade (0 = judged not relevant; higher = more relevant).
Qrels = Mapping[str, Mapping[str, int]]
Layout = Literal["beir", "cranfield"]


class DatasetError(InvalidRequestError):
    """A judged collection is missing, of an unknown layout, or has a malformed file."""

    code = "dataset_invalid"


@dataclass(frozen=True, slots=True)
class JudgedDocument:
    id: str
    title: str
    text: str

    @property
    def indexed_text(self) -> str:
        """What gets indexed: title + " " + text, the BEIR convention (so figures compare)."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True, slots=True)
class JudgedQuery:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class JudgedCollection:
    """One judged collection; documents are read again, lazily, at each :meth:`documents` call
    (a BEIR corpus may not fit in memory)."""

    name: str
    layout: Layout
    path: Path
    #: The queries to evaluate, in file order: those with judgments in the chosen split.
    queries: Sequence[JudgedQuery]
    qrels: Qrels
    read_documents: Callable[[], Iterator[JudgedDocument]]
    #: Things a user should know about the data (judgments of unknown queries skipped, ...).
    notes: tuple[str, ...] = field(default=())

    def documents(self) -> Iterator[JudgedDocument]:
        return self.read_documents()

    def first_queries(self, limit: int | None) -> JudgedCollection:
        """The same collection with only its first ``limit`` queries (all when ``None``)."""
        if limit is None or limit >= len(self.queries):
            return self
        if limit < 1:
            raise DatasetError(f"the number of queries must be at least 1, not {limit}")
        kept = list(self.queries[:limit])
        ids = {query.id for query in kept}
        return replace(self, queries=kept, qrels={q: j for q, j in self.qrels.items() if q in ids})


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    return path
