"""Component base classes: what a plugin registers through the ``register_*`` hooks.

Each component is an object with a short ``name`` (unique per kind, chosen in config), capability
attributes the core reads before calling it, and ``async`` methods for its work. CPU-heavy components
(parsers, local models) run their heavy part in a thread (``asyncio.to_thread``) so the event loop stays
free.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal


class ComponentKind(StrEnum):
    LOADER = "loader"
    CLEANER = "cleaner"
    EMBEDDER = "embedder"
    RETRIEVER = "retriever"
    RERANKER = "reranker"
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
    #: Loader options given with this source (e.g. which CSV column holds the text).
    options: Mapping[str, Any] = field(default_factory=dict)

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


BlockKind = Literal["heading", "paragraph", "list", "table", "code"]


@dataclass(slots=True)
class Block:
    """One structural piece of a document: a heading, a paragraph, a list, a table or code.

    The chunker keeps headings as the path of every chunk under them, never splits inside a
    sentence when it can avoid it, and carries ``page`` into each chunk for citations.
    """

    text: str
    kind: BlockKind = "paragraph"
    #: Heading level (1 = top); 0 for other kinds.
    level: int = 0
    #: 1-based page number, for paginated formats (PDF).
    page: int | None = None


#: What separates blocks in :attr:`Document.text`; chunk character spans count it.
BLOCK_SEPARATOR = "\n\n"


@dataclass(slots=True)
class Document:
    """One loaded document: structured text plus what a citation needs to point back at it.

    ``source`` identifies the document inside its collection (a relative path, a URL, an upload
    name, ``file.jsonl#L12`` for a record); re-ingesting the same ``source`` replaces it.
    """

    blocks: list[Block]
    source: str
    title: str | None = None
    media_type: str = "text/plain"
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_text(
        cls,
        text: str,
        source: str,
        *,
        title: str | None = None,
        media_type: str = "text/plain",
        metadata: dict[str, Any] | None = None,
    ) -> Document:
        """A document of paragraphs: ``text`` split at blank lines."""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        paragraphs = [part.strip("\n") for part in re.split(r"\n[ \t]*\n", text)]
        return cls(
            blocks=[Block(part) for part in paragraphs if part.strip()],
            source=source,
            title=title,
            media_type=media_type,
            metadata=dict(metadata or {}),
        )

    @property
    def text(self) -> str:
        """The whole text: the blocks joined by :data:`BLOCK_SEPARATOR`."""
        return BLOCK_SEPARATOR.join(block.text for block in self.blocks)

    def map_text(self, rewrite: Callable[[str], str]) -> None:
        """Apply ``rewrite`` to every block's text and drop the blocks left empty."""
        for block in self.blocks:
            block.text = rewrite(block.text)
        self.blocks = [block for block in self.blocks if block.text.strip()]


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
    #: Hits wanted; 0 means the configured ``retrieval.top_k``. Retrievers always get the resolved number.
    top_k: int = 0
    #: Metadata filter (see ``docs/retrieval.md``); already compiled into the context's scope.
    filters: Mapping[str, Any] | None = None
    #: Retriever-specific options of the request.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The query's embedding when the caller already has it; otherwise the context computes it.
    embedding: Sequence[float] | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk a retriever found, with its score (higher is better within one retriever).

    A retriever may fill only ``chunk_id`` and ``score``: the host completes the rest (text, document,
    source, title, heading path, page, span) from the database before it answers.
    """

    chunk_id: str
    score: float
    document_id: str = ""
    text: str = ""
    collection_id: str = ""
    source: str = ""
    title: str | None = None
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


# --- LLM data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class SourcePassage:
    """A retrieved passage given to the model, cited in the answer as ``[number]``."""

    number: int
    text: str
    title: str | None = None
    source: str = ""
    page: int | None = None


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One generation: the prompt as messages (sources already rendered into them) and its limits."""

    messages: Sequence[ChatMessage]
    system: str | None = None
    max_output_tokens: int = 1024
    temperature: float = 0.0
    stop: Sequence[str] = ()
    #: The numbered sources the prompt holds, for models that work on them directly (``extractive``);
    #: a generative model reads them from the messages and may ignore this.
    sources: Sequence[SourcePassage] = ()
    #: Model-specific options of the request (``ChatOptions.llm_options``), validated by the model.
    options: Mapping[str, Any] = field(default_factory=dict)


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
        """Yield the documents found in ``source`` (an ``async def`` generator).

        Raise :class:`opentier.errors.DocumentLoadError` with a reason a user can act on when the
        source cannot be read (corrupt, encrypted, wrong format); parse in a thread.
        """


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
    #: Changes whenever the same text would get a different vector (new weights, new pooling):
    #: a collection is bound to one (name, version, dimensions) and never mixes vectors.
    version: str = "1"

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one vector per text, in order."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this embedder's tokens (what chunk sizes are measured in)."""

    def token_spans(self, text: str) -> Sequence[tuple[int, int]] | None:
        """Optional: ``(start, end)`` character offsets in ``text`` of its tokens, special tokens excluded.

        An embedder whose tokenizer splits at whitespace and punctuation (WordPiece, most BPEs) can
        return them; the chunker then tokenizes a long block once and counts any part of it from the
        spans, instead of tokenizing every sentence again. ``None`` (the default): it calls
        :meth:`count_tokens` on each part.
        """
        return None


class Retriever(Component):
    """Finds the chunks that best answer a query, within the query's tenant and collections."""

    kind = ComponentKind.RETRIEVER

    @abstractmethod
    async def retrieve(self, query: SearchQuery, context: Any) -> Sequence[SearchHit]:
        """Return at most ``query.top_k`` hits, best first.

        ``context`` is the search's :class:`opentier.retrieval.RetrievalContext`: database access, the
        collections in scope and the SQL condition every query must include.
        """


class Reranker(Component):
    """Reorders (and may drop) the candidates a retriever found, before the top ``k`` are kept."""

    kind = ComponentKind.RERANKER

    @abstractmethod
    async def rerank(
        self, query: SearchQuery, hits: Sequence[SearchHit], context: Any
    ) -> Sequence[SearchHit]:
        """Return ``hits`` reordered, best first (complete hits: text, document and source are filled).

        ``context`` is the search's :class:`opentier.retrieval.RetrievalContext`.
        """


class LLM(Component):
    """Streams an answer for a conversation."""

    kind = ComponentKind.LLM
    #: Tokens the model accepts, prompt and answer together.
    context_window: int

    @abstractmethod
    def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        """Yield :class:`TextDelta` pieces then one :class:`Usage` (an ``async def`` generator).

        Closing the generator early (a cancelled chat) must stop the work: close the remote request,
        interrupt the local generation. Failures raise :class:`opentier.errors.LLMError` subclasses
        (unavailable, rate limited, timed out, refused...) so that clients get stable codes.
        """

    def count_tokens(self, text: str) -> int:
        """Approximate token count used for budgeting when the model has no tokenizer here."""
        return max(1, len(text) // 4)


COMPONENT_BASES: dict[ComponentKind, type[Component]] = {
    ComponentKind.LOADER: Loader,
    ComponentKind.CLEANER: Cleaner,
    ComponentKind.EMBEDDER: Embedder,
    ComponentKind.RETRIEVER: Retriever,
    ComponentKind.RERANKER: Reranker,
    ComponentKind.LLM: LLM,
}
