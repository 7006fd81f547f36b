"""Structure-aware chunking, sized in the embedder's own tokens.

A document's blocks are cut into pieces (whole blocks, else sentences, else word windows) and the
pieces packed greedily into chunks of at most ``max_tokens``. A heading starts a new chunk and becomes
part of the heading path of every chunk under it. Consecutive chunks of one section share up to
``overlap_tokens`` of trailing sentences. Every chunk's text is exactly ``document.text[start:end]``,
so a citation can point at the span; the text that is embedded adds the title and heading path in
front (counted in the budget too).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from opentier.components import BLOCK_SEPARATOR, Document

_SENTENCE_END = re.compile("(?<=[.!?\u2026\u3002\uff01\uff1f])[\"')\\]]*\\s+|\n+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a document, with what a citation needs."""

    ordinal: int
    text: str
    char_start: int
    char_end: int
    heading_path: tuple[str, ...]
    page: int | None
    page_end: int | None
    token_count: int
    #: What is embedded: title and heading path, then the text.
    embed_text: str


@dataclass(slots=True)
class _Piece:
    start: int
    end: int
    tokens: int
    page: int | None
    #: ``tokens`` is ``count_tokens`` of exactly this text (minus the fixed cost), not an estimate.
    counted: bool = False


@dataclass(slots=True)
class _Section:
    heading_path: tuple[str, ...]
    #: What the embedded text of each chunk starts with, and the tokens left for the chunk's text.
    prefix: str
    budget: int
    pieces: list[_Piece] = field(default_factory=list)


class Chunker:
    """Cuts documents into chunks no longer than ``max_tokens`` by ``count_tokens``.

    :param count_tokens: the embedder's token count for a text (special tokens included).
    :param max_tokens: hard ceiling per embedded text (never above the embedder's input limit).
    :param overlap_tokens: trailing tokens of a chunk repeated at the start of the next one.
    :param token_spans: the embedder's token offsets of a text, if it has them: a block too long for
        one chunk is then tokenized once and its sentences and word windows counted from the offsets.
    """

    def __init__(
        self,
        count_tokens: Callable[[str], int],
        max_tokens: int,
        overlap_tokens: int = 0,
        *,
        token_spans: Callable[[str], Sequence[tuple[int, int]] | None] | None = None,
    ) -> None:
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, not {max_tokens}")
        self.count_tokens = count_tokens
        #: Tokenizes a block once when it does not fit (see :meth:`Embedder.token_spans`).
        self.token_spans = token_spans
        self.max_tokens = max_tokens
        self.overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
        # Tokens every text costs whatever it holds (e.g. [CLS] and [SEP]).
        self._fixed = count_tokens("")

    def _cost(self, text: str) -> int:
        return max(0, self.count_tokens(text) - self._fixed)

    def chunk(self, document: Document) -> list[Chunk]:
        text = document.text
        chunks: list[Chunk] = []
        for section in self._sections(document):
            prefix = section.prefix
            for group in self._pack(section.pieces, section.budget):
                start, end = group[0].start, group[-1].end
                body = text[start:end]
                embed_text = f"{prefix}\n{body}" if prefix else body
                if len(group) == 1 and group[0].counted and not prefix:
                    # The text was counted whole already (most chunks of short documents).
                    token_count = group[0].tokens + self._fixed
                else:
                    token_count = self.count_tokens(embed_text)
                pages = [p.page for p in group if p.page is not None]
                chunks.append(
                    Chunk(
                        ordinal=len(chunks),
                        text=body,
                        char_start=start,
                        char_end=end,
                        heading_path=section.heading_path,
                        page=min(pages) if pages else None,
                        page_end=max(pages) if pages else None,
                        token_count=token_count,
                        embed_text=embed_text,
                    )
                )
        return chunks

    # -- sections and pieces --------------------------------------------------------------------

    def _section(self, title: str | None, heading_path: tuple[str, ...]) -> _Section:
        prefix = context_prefix(title, heading_path)
        budget = self.max_tokens - self._fixed - (self._cost(prefix) + 1 if prefix else 0)
        if budget < 8:  # a heading path too long to leave room: embed the text alone
            prefix, budget = "", self.max_tokens - self._fixed
        return _Section(heading_path, prefix, budget)

    def _sections(self, document: Document) -> Iterator[_Section]:
        path: list[tuple[int, str]] = []
        current = self._section(document.title, ())
        offset = 0
        for block in document.blocks:
            start, end = offset, offset + len(block.text)
            offset = end + len(BLOCK_SEPARATOR)
            if block.kind == "heading":
                if current.pieces:
                    yield current
                level = max(1, block.level)
                path = [(lvl, title) for lvl, title in path if lvl < level]
                path.append((level, " ".join(block.text.split())))
                current = self._section(document.title, tuple(title for _lvl, title in path))
                continue
            current.pieces.extend(self._pieces(block.text, start, block.page, current.budget))
        if current.pieces:
            yield current

    def _pieces(self, text: str, base: int, page: int | None, budget: int) -> Iterator[_Piece]:
        """The block whole when it fits a chunk, else its sentences, else word windows.

        One token count per block that fits (most blocks); a longer one is counted part by part from
        its token offsets when the embedder gives them, else with one count per part.
        """
        stripped_start = len(text) - len(text.lstrip())
        stripped_end = len(text.rstrip())
        if stripped_end <= stripped_start:
            return
        whole = text[stripped_start:stripped_end]
        tokens = self._cost(whole)
        if tokens <= budget:
            yield _Piece(base + stripped_start, base + stripped_end, tokens, page, counted=True)
            return
        spans = self.token_spans(text) if self.token_spans is not None else None
        counter = _SpanCounter(spans).cost if spans is not None else None
        for s_start, s_end in _sentences(text):
            cost = counter(s_start, s_end) if counter is not None else self._cost(text[s_start:s_end])
            if cost <= budget // 2:
                yield _Piece(base + s_start, base + s_end, cost, page)
            else:
                yield from self._windows(
                    text, s_start, s_end, base, page=page, limit=budget // 2, counter=counter
                )

    def _windows(
        self,
        text: str,
        start: int,
        end: int,
        base: int,
        *,
        page: int | None,
        limit: int,
        counter: Callable[[int, int], int] | None = None,
    ) -> Iterator[_Piece]:
        """Word windows of at most ``limit`` tokens (for a sentence longer than a chunk)."""

        def cost(a: int, b: int) -> int:
            return counter(a, b) if counter is not None else self._cost(text[a:b])

        words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]  # positions in text
        i = 0
        while i < len(words):
            j = i + 1
            window = cost(words[i][0], words[i][1])
            if window > limit:  # one enormous "word" (a URL, a hash): cut it by characters
                yield from self._characters(text, words[i][0], words[i][1], base, page=page, limit=limit)
                i += 1
                continue
            while j < len(words):
                candidate = cost(words[i][0], words[j][1])
                if candidate > limit:
                    break
                window = candidate
                j += 1
            yield _Piece(base + words[i][0], base + words[j - 1][1], window, page)
            i = j

    def _characters(
        self, text: str, start: int, end: int, base: int, *, page: int | None, limit: int
    ) -> Iterator[_Piece]:
        step = max(1, limit)
        while start < end:
            stop = min(end, start + step)
            while stop > start + 1 and self._cost(text[start:stop]) > limit:
                stop = start + max(1, (stop - start) * 3 // 4)
            yield _Piece(base + start, base + stop, self._cost(text[start:stop]), page)
            start = stop

    # -- packing --------------------------------------------------------------------------------

    def _pack(self, pieces: list[_Piece], budget: int) -> Iterator[list[_Piece]]:
        """Greedy packing with overlap; a joint between pieces is counted as one token."""
        group: list[_Piece] = []
        used = 0
        for piece in pieces:
            if group and used + 1 + piece.tokens > budget:
                yield group
                group = self._overlap(group, budget - piece.tokens - 1)
                used = sum(p.tokens + 1 for p in group)
            used += piece.tokens + (1 if group else 0)
            group.append(piece)
        if group:
            yield group

    def _overlap(self, group: list[_Piece], room: int) -> list[_Piece]:
        """Trailing pieces of ``group`` worth at most ``overlap_tokens`` (and ``room``)."""
        keep: list[_Piece] = []
        total = 0
        allowed = min(self.overlap_tokens, room)
        for piece in reversed(group[1:]):  # never the whole previous chunk
            if total + piece.tokens > allowed:
                break
            keep.insert(0, piece)
            total += piece.tokens
        return keep


class _SpanCounter:
    """Tokens of ``text[start:end]`` counted from the offsets of ``text``'s tokens (two bisections).

    Exact where the tokenizer splits at the cut (whitespace between sentences and words); a token
    that straddles a cut counts for neither side.
    """

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        self._starts = [start for start, _end in spans]
        self._ends = [end for _start, end in spans]

    def cost(self, start: int, end: int) -> int:
        return max(0, bisect_right(self._ends, end) - bisect_left(self._starts, start))


def _sentences(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each sentence or line of ``text``, whitespace trimmed."""
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() if match.group().startswith("\n") else match.end()
        yield from _trimmed(text, start, end)
        start = match.end()
    yield from _trimmed(text, start, len(text))


def _trimmed(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    piece = text[start:end]
    left = len(piece) - len(piece.lstrip())
    right = len(piece.rstrip())
    if right > left:
        yield start + left, start + right


def context_prefix(title: str | None, heading_path: tuple[str, ...]) -> str:
    """The line embedded above a chunk's text: the document's title and the chunk's headings."""
    parts = [p for p in (title, *heading_path) if p]
    # A first heading that repeats the title adds nothing.
    if len(parts) > 1 and parts[0].strip().lower() == parts[1].strip().lower():
        parts.pop(0)
    return " > ".join(parts)
