"""Component base classes: what a plugin registers through the ``register_*`` hooks.

Each component is an object with a short ``name`` (unique per kind, chosen in config), capability
attributes the core reads before calling it, and ``async`` methods for its work. CPU-heavy components
(parsers, local models) run their heavy part in a thread (``asyncio.to_thread``) so the event loop stays
free.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal


class ComponentKind(StrEnum):
    LOADER = "loader"
    CLEANER = "cleaner"
    EMBEDDER = "embedder"
    RETRIEVER = "retriever"
    LLM = "llm"


NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Component(ABC):
    """Common shape of every component."""

    kind: ClassVar[ComponentKind]
    #: Short, user-visible name, unique within its kind (``[a-z0-9][a-z0-9_.-]*``).
    name: str
    #: One line shown by ``opentier plugins``.
    description: str = ""


# --- ingestion data ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Something to load: bytes already in memory or a file on the host's disk."""

    #: Identifies the document inside its collection: a relative path, a URL or an upload's name.
    uri: str
    media_type: str | None = None
    data: bytes | None = None
    path: Path | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is not None:
            return self.path.read_bytes()
        raise ValueError(f"source {self.uri!r} has neither data nor path")

    @property
    def extension(self) -> str:
        """Lower-case extension of the source's name, with its dot (``.pdf``), or ``""``."""
        name = self.path.name if self.path is not None else self.uri.rsplit("/", 1)[-1]
        return Path(name).suffix.lower()


@dataclass(slots=True)
class Document:
    """One loaded document: text plus what a citation needs to point back at it."""

    text: str
    source: str
    title: str | None = None
    media_type: str = "text/plain"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A cleaner's verdict that a document must not be indexed, and why."""

    reason: str


# --- retrieval data ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A retrieval request, already scoped to one tenant by the host."""

    text: str
    tenant_id: str
    collection_ids: Sequence[str]
    top_k: int = 8
    filters: Mapping[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk a retriever found, with its score (higher is better within one retriever)."""

    chunk_id: str
    document_id: str
    score: float
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


# --- LLM data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: Sequence[ChatMessage]
    system: str | None = None
    max_output_tokens: int = 1024
    temperature: float = 0.0
    stop: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one LLM call, as the model reported them (or counted)."""

    input_tokens: int
    output_tokens: int


LLMEvent = TextDelta | Usage


# --- the component kinds ----------------------------------------------------------------------


class Loader(Component):
    """Turns a :class:`Source` into documents, one at a time (memory stays bounded)."""

    kind = ComponentKind.LOADER
    #: Media types this loader reads, e.g. ``{"text/plain"}``.
    media_types: ClassVar[frozenset[str]] = frozenset()
    #: File extensions this loader reads, with the dot, e.g. ``{".txt"}``.
    extensions: ClassVar[frozenset[str]] = frozenset()

    def accepts(self, source: Source) -> bool:
        """Whether this loader can read ``source`` (by media type, then by extension)."""
        if source.media_type is not None and source.media_type.split(";")[0] in self.media_types:
            return True
        return source.extension in self.extensions

    @abstractmethod
    def load(self, source: Source) -> AsyncIterator[Document]:
        """Yield the documents found in ``source`` (an ``async def`` generator)."""


class Cleaner(Component):
    """Rewrites a document's text, or drops the document with a reason."""

    kind = ComponentKind.CLEANER

    @abstractmethod
    async def clean(self, document: Document) -> Document | Dropped:
        """Return the cleaned document (may be the same object) or :class:`Dropped`."""


class Embedder(Component):
    """Turns texts into vectors of ``dimensions`` floats."""

    kind = ComponentKind.EMBEDDER
    #: Size of every vector this embedder returns.
    dimensions: int
    #: Longest input, in the embedder's own tokens, before it truncates.
    max_input_tokens: int
    #: How many texts :meth:`embed` takes at once efficiently.
    batch_size: int = 32

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one vector per text, in order."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this embedder's tokens (what chunk sizes are measured in)."""


class Retriever(Component):
    """Finds the chunks that best answer a query, within the query's tenant and collections."""

    kind = ComponentKind.RETRIEVER

    @abstractmethod
    async def retrieve(self, query: SearchQuery, context: Any) -> Sequence[SearchHit]:
        """Return at most ``query.top_k`` hits, best first. ``context`` gives database access."""


class LLM(Component):
    """Streams an answer for a conversation."""

    kind = ComponentKind.LLM
    #: Tokens the model accepts, prompt and answer together.
    context_window: int

    @abstractmethod
    def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        """Yield :class:`TextDelta` pieces then one :class:`Usage` (an ``async def`` generator)."""

    def count_tokens(self, text: str) -> int:
        """Approximate token count used for budgeting when the model has no tokenizer here."""
        return max(1, len(text) // 4)


COMPONENT_BASES: dict[ComponentKind, type[Component]] = {
    ComponentKind.LOADER: Loader,
    ComponentKind.CLEANER: Cleaner,
    ComponentKind.EMBEDDER: Embedder,
    ComponentKind.RETRIEVER: Retriever,
    ComponentKind.LLM: LLM,
}
