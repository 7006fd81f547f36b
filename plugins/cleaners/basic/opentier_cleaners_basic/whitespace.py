"""The ``whitespace`` cleaner: control characters, runs of spaces, blank lines, empty documents."""

from __future__ import annotations

import re

from opentier.components import Block, Cleaner, Document, Dropped

# Line and page separators become line breaks (a PDF's form feed must not glue two words together).
_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0/C1 control characters except tab and newline; zero-width space, word joiner, BOM. The
# zero-width (non-)joiners U+200C/U+200D stay: emoji sequences and several scripts need them.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACES = re.compile(r"[ \t\u00a0]+$", re.M)

#: Blocks whose spacing carries meaning (indentation, columns): only controls and line ends change.
VERBATIM_KINDS = frozenset({"code", "table"})


def normalise_whitespace(text: str) -> str:
    """One space between words, no control characters, at most one blank line in a row."""
    text = _CONTROL.sub("", _BREAKS.sub("\n", text))
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def normalise_verbatim(text: str) -> str:
    """Code and tables: no control characters nor trailing spaces; indentation and columns kept."""
    text = _CONTROL.sub("", _BREAKS.sub("\n", text))
    return _TRAILING_SPACES.sub("", text).strip("\n")


def _normalise_block(block: Block) -> None:
    if block.kind in VERBATIM_KINDS:
        block.text = normalise_verbatim(block.text)
    else:
        block.text = normalise_whitespace(block.text)


class WhitespaceCleaner(Cleaner):
    name = "whitespace"
    description = "Removes control characters, collapses runs of spaces and blank lines (code kept)."

    async def clean(self, document: Document) -> Document | Dropped:
        for block in document.blocks:
            _normalise_block(block)
        document.blocks = [block for block in document.blocks if block.text.strip()]
        if document.title is not None:
            document.title = " ".join(_CONTROL.sub("", document.title).split()) or None
        if not document.blocks:
            return Dropped("the document has no text left after whitespace normalisation")
        return document
