"""The numbered sources of one answer: what the model was given, and what a citation points at.

A :class:`NumberedSource` is stored with the assistant message (as JSON), so a citation keeps its
chunk, document, span and text even after the document changes or is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from opentier.components import SearchHit, SourcePassage


@dataclass(frozen=True, slots=True)
class NumberedSource:
    """Source ``number`` of an answer: a retrieved chunk as it was given to the model."""

    number: int
    chunk_id: str
    document_id: str
    collection_id: str
    source: str
    title: str | None
    page: int | None
    char_start: int | None
    char_end: int | None
    heading_path: tuple[str, ...]
    score: float
    text: str

    @classmethod
    def from_hit(cls, number: int, hit: SearchHit, text: str | None = None) -> NumberedSource:
        """``hit`` as source ``number``; ``text`` when the prompt holds less than the whole chunk."""
        return cls(
            number=number,
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            collection_id=hit.collection_id,
            source=hit.source,
            title=hit.title,
            page=hit.page,
            char_start=hit.char_start,
            char_end=hit.char_end,
            heading_path=tuple(hit.heading_path),
            score=hit.score,
            text=hit.text if text is None else text,
        )

    def passage(self) -> SourcePassage:
        return SourcePassage(
            number=self.number, text=self.text, title=self.title, source=self.source, page=self.page
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["heading_path"] = list(self.heading_path)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NumberedSource:
        return cls(
            number=int(data["number"]),
            chunk_id=str(data["chunk_id"]),
            document_id=str(data["document_id"]),
            collection_id=str(data["collection_id"]),
            source=str(data.get("source") or ""),
            title=data.get("title"),
            page=data.get("page"),
            char_start=data.get("char_start"),
            char_end=data.get("char_end"),
            heading_path=tuple(data.get("heading_path") or ()),
            score=float(data.get("score") or 0.0),
            text=str(data.get("text") or ""),
        )
