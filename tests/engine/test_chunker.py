"""The chunker: structure kept, sizes respected in the embedder's tokens, spans exact, overlap."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from opentier.components import Block, Document
from opentier.engine.chunker import Chunker


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word or punctuation mark, plus [CLS] and [SEP]."""
    return len(re.findall(r"\w+|[^\w\s]", text)) + 2


def sentence(n: int, topic: str = "wing") -> str:
    return f"The {topic} test number {n} measured lift and drag at several speeds."


def make(*blocks: Block, title: str | None = "Report") -> Document:
    return Document(blocks=list(blocks), source="report.pdf", title=title)


def test_spans_are_exact_and_sizes_respected() -> None:
    body = " ".join(sentence(i) for i in range(60))
    doc = make(Block("Results", kind="heading", level=1), Block(body, page=3))
    chunks = Chunker(words, max_tokens=64, overlap_tokens=12).chunk(doc)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text == doc.text[chunk.char_start : chunk.char_end]
        assert words(chunk.embed_text) == chunk.token_count <= 64
        assert chunk.heading_path == ("Results",)
        assert chunk.page == 3
        assert chunk.embed_text.startswith("Report > Results\n")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    # sentences are never cut in the middle
    for chunk in chunks:
        assert chunk.text.startswith("The ") and chunk.text.endswith(".")


def test_every_sentence_is_in_some_chunk_and_neighbours_overlap() -> None:
    body = " ".join(sentence(i) for i in range(40))
    doc = make(Block(body))
    chunks = Chunker(words, max_tokens=60, overlap_tokens=15).chunk(doc)
    joined = " ".join(c.text for c in chunks)
    for i in range(40):
        assert sentence(i) in joined
    for before, after in pairwise(chunks):
        assert after.char_start < before.char_end, "consecutive chunks of a section share a sentence"


def test_no_overlap_when_disabled() -> None:
    doc = make(Block(" ".join(sentence(i) for i in range(40))))
    chunks = Chunker(words, max_tokens=60, overlap_tokens=0).chunk(doc)
    for before, after in pairwise(chunks):
        assert after.char_start > before.char_end


def test_headings_start_new_chunks_and_form_a_path() -> None:
    doc = make(
        Block("Aerodynamics", kind="heading", level=1),
        Block("Intro paragraph about flow."),
        Block("Boundary layers", kind="heading", level=2),
        Block("Laminar flow separates early."),
        Block("Turbulence", kind="heading", level=2),
        Block("Turbulent layers resist separation."),
        Block("Structures", kind="heading", level=1),
        Block("Panels buckle under load."),
    )
    chunks = Chunker(words, max_tokens=256).chunk(doc)
    assert [(c.heading_path, c.text) for c in chunks] == [
        (("Aerodynamics",), "Intro paragraph about flow."),
        (("Aerodynamics", "Boundary layers"), "Laminar flow separates early."),
        (("Aerodynamics", "Turbulence"), "Turbulent layers resist separation."),
        (("Structures",), "Panels buckle under load."),
    ]


def test_small_paragraphs_are_packed_together_with_pages() -> None:
    doc = make(*(Block(f"Paragraph {i} on page {i // 2 + 1}.", page=i // 2 + 1) for i in range(6)))
    chunks = Chunker(words, max_tokens=256).chunk(doc)
    assert len(chunks) == 1
    assert chunks[0].text == doc.text
    assert (chunks[0].page, chunks[0].page_end) == (1, 3)


def test_a_sentence_longer_than_a_chunk_is_cut_into_word_windows() -> None:
    endless = " ".join(f"word{i}" for i in range(500))
    doc = make(Block(endless), title=None)
    chunks = Chunker(words, max_tokens=50, overlap_tokens=0).chunk(doc)
    assert all(c.token_count <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks) == endless


def word_spans(text: str) -> list[tuple[int, int]]:
    """Offsets of the tokens :func:`words` counts (what an embedder's ``token_spans`` gives)."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def test_a_long_sentence_after_others_keeps_its_place_and_exact_spans() -> None:
    # A run-on sentence (a table row, a PDF line without full stops) after ordinary sentences: its
    # word windows must point at its own text, in order.
    endless = " ".join(f"cell{i}" for i in range(300))
    body = f"{sentence(1)} {sentence(2)} {endless}. {sentence(3)}"
    doc = make(Block(body), title=None)
    for spans in (None, word_spans):
        chunks = Chunker(words, max_tokens=50, overlap_tokens=0, token_spans=spans).chunk(doc)
        assert [c.char_start for c in chunks] == sorted(c.char_start for c in chunks)
        for chunk in chunks:
            assert chunk.text == doc.text[chunk.char_start : chunk.char_end]
            assert words(chunk.embed_text) == chunk.token_count <= 50
        joined = " ".join(c.text for c in chunks)
        for part in (sentence(1), sentence(2), sentence(3), "cell0 cell1", "cell298 cell299"):
            assert part in joined


def test_token_spans_give_the_same_chunks_as_counting_each_part() -> None:
    body = " ".join(sentence(i, topic=f"wing{i % 7}") for i in range(80))
    doc = make(Block("Results", kind="heading", level=1), Block(body, page=2))
    counted = Chunker(words, max_tokens=64, overlap_tokens=12).chunk(doc)
    calls: list[str] = []

    def counting(text: str) -> int:
        calls.append(text)
        return words(text)

    spanned = Chunker(counting, max_tokens=64, overlap_tokens=12, token_spans=word_spans).chunk(doc)
    assert [(c.char_start, c.char_end, c.token_count) for c in spanned] == [
        (c.char_start, c.char_end, c.token_count) for c in counted
    ]
    # The block is tokenized once, then only each chunk's own text: no sentence is counted alone.
    assert not any(text == sentence(5, topic="wing5") for text in calls)


def test_a_single_enormous_word_is_cut_by_characters() -> None:
    blob = "x" * 5000

    def chars(text: str) -> int:  # a tokenizer that counts 10 characters per token
        return len(text) // 10 + 2

    chunks = Chunker(chars, max_tokens=40).chunk(make(Block(blob), title=None))
    assert "".join(c.text for c in chunks) == blob
    assert all(c.token_count <= 40 for c in chunks)


def test_empty_document_gives_no_chunk() -> None:
    assert Chunker(words, max_tokens=64).chunk(make(Block("   "))) == []


def test_too_small_a_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        Chunker(words, max_tokens=4)
