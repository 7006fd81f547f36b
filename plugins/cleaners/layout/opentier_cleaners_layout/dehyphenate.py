"""The ``dehyphenate`` cleaner: undoes the line breaks of page layout.

Three steps, each one linear in the size of the document:

1. A paragraph that a page break cut in two (it ends without a full stop, the next page goes on in
   lower case) becomes one block again, on the page where it starts.
2. A word hyphenated at the end of a line is joined ("infor-\\nmation" -> "information"); a soft
   hyphen at a line end always is. For a hyphen, the first rule that applies decides:
   the break is inside a longer compound ("state-of-the-\\nart"): keep; the joined word occurs
   elsewhere in the document ("OP-\\nTIONAL" where "OPTIONAL" does): join; the hyphenated form
   does: keep; the next line starts with a capital or a digit ("Franco-\\nPrussian", "COVID-\\n19"),
   or the part before is a single letter ("e-\\nmail": hyphenation leaves two letters at least), or
   a prefix that keeps its hyphen ("self-", "well-"): keep; otherwise: join.
3. The remaining line breaks inside a paragraph or heading become spaces, except before a line that
   starts a list item ("- ", "• ", "1. ", "a) ").

Lists get step 2 only; code and tables are left alone.
"""

from __future__ import annotations

import re

from opentier.components import Block, Cleaner, Document, Dropped
from opentier_cleaners_layout.options import LayoutOptions

_HYPHENATED_KINDS = frozenset({"paragraph", "heading", "list"})
_JOINED_KINDS = frozenset({"paragraph", "heading"})

#: Prefixes that keep their hyphen when a line break falls after them.
KEEP_HYPHEN_PREFIXES = frozenset({"half", "quasi", "self", "well"})

_SOFT_HYPHEN_BREAK = re.compile(r"\u00ad[ \t]*\n[ \t]*")
# A word, a hyphen (U+002D or U+2010) ending the line, and the word the next line starts with.
_HYPHEN_BREAK = re.compile(
    r"(?<![^\W\d_])(?P<left>[^\W\d_]+)(?P<hyphen>[-\u2010])[ \t]*\n[ \t]*(?P<right>\w+)"
)
# Words as they occur on one line, compounds whole: "information", "well-known".
_WORDS = re.compile(r"[^\W\d_]+(?:[-\u2010][^\W\d_]+)*")
_LIST_ITEM = r"(?:[-*\u2022\u25aa\u25e6\u2023\u2013\u2014\u00b7]|\(?(?:\d{1,3}|[A-Za-z])[.)])[ \t]"
_LINE_BREAK = re.compile(rf"[ \t]*\n[ \t]*+(?!{_LIST_ITEM})")
_SENTENCE_END = frozenset(".!?:;\u2026\"'\u201d\u2019)]\u00bb")


class _Vocabulary:
    """The document's own words, read only when a hyphenated break needs them."""

    def __init__(self, blocks: list[Block]) -> None:
        self._blocks = blocks
        self._words: set[str] | None = None

    def __contains__(self, word: str) -> bool:
        if self._words is None:
            self._words = set()
            for block in self._blocks:
                self._words.update(_WORDS.findall(block.text.lower()))
        return word in self._words


def keep_hyphen(left: str, right: str, around: str, vocabulary: _Vocabulary) -> bool:
    """Whether "``left``-\\n``right``" is a real compound rather than a word split by hyphenation.

    ``around`` holds the characters just before ``left`` and just after ``right``.
    """
    if "-" in around or "\u2010" in around:  # inside a compound: "state-of-the-\nart", "paper-\nand-pencil"
        return True
    if f"{left}{right}".lower() in vocabulary:  # "OP-\nTIONAL" where "OPTIONAL" occurs elsewhere
        return False
    if f"{left}-{right}".lower() in vocabulary:
        return True
    if not right[0].islower() or len(left) == 1:
        return True
    return left.lower() in KEEP_HYPHEN_PREFIXES


def _join_hyphenated(text: str, vocabulary: _Vocabulary) -> str:
    text = _SOFT_HYPHEN_BREAK.sub("", text).replace("\u00ad", "")

    def join(match: re.Match[str]) -> str:
        start, end = match.span()
        around = text[start - 1 : start] + text[end : end + 1]
        left, right = match["left"], match["right"]
        if keep_hyphen(left, right, around, vocabulary):
            return f"{left}{match['hyphen']}{right}"
        return left + right

    return _HYPHEN_BREAK.sub(join, text)


def _continues(first: Block, first_ends_on: int | None, second: Block) -> bool:
    """Whether ``second`` is the rest of ``first`` (which ends on page ``first_ends_on``)."""
    return (
        first.kind == second.kind == "paragraph"
        and first_ends_on is not None
        and second.page == first_ends_on + 1
        and second.text[:1].islower()
        and first.text[-1:] not in _SENTENCE_END
    )


def merge_page_breaks(blocks: list[Block]) -> list[Block]:
    """Paragraphs continued on the next page, as one block (on the page where they start)."""
    merged: list[Block] = []
    ends_on: int | None = None  # the page where merged[-1] ends
    for block in blocks:
        if merged and _continues(merged[-1], ends_on, block):
            merged[-1].text = f"{merged[-1].text}\n{block.text}"
        else:
            merged.append(block)
        ends_on = block.page
    return merged


def dehyphenate_blocks(blocks: list[Block], *, join_lines: bool = True) -> list[Block]:
    """The three steps of this module, on ``blocks`` (changed in place; the list may shrink)."""
    blocks = merge_page_breaks(blocks)
    vocabulary = _Vocabulary(blocks)
    for block in blocks:
        if block.kind in _HYPHENATED_KINDS and "\n" in block.text:
            block.text = _join_hyphenated(block.text, vocabulary)
        elif "\u00ad" in block.text:
            block.text = block.text.replace("\u00ad", "")
        if join_lines and block.kind in _JOINED_KINDS and "\n" in block.text:
            block.text = _LINE_BREAK.sub(" ", block.text)
    return blocks


class DehyphenateCleaner(Cleaner):
    name = "dehyphenate"
    description = "Joins words hyphenated at line ends and lines a PDF broke inside a paragraph."

    def __init__(self, options: LayoutOptions | None = None) -> None:
        self.configure(options or LayoutOptions())

    def configure(self, options: LayoutOptions) -> None:
        self.join_lines = options.join_lines

    async def clean(self, document: Document) -> Document | Dropped:
        document.blocks = dehyphenate_blocks(document.blocks, join_lines=self.join_lines)
        return document
