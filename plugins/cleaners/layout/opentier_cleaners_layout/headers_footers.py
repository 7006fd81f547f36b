"""The ``headers-footers`` cleaner: drops lines repeated at the top or bottom of most pages.

Only the first and last ``window`` lines of each page are candidates. One of them is a running header
or footer when, with its numbers ignored (page numbers vary),

- it recurs among those lines on at least ``min_fraction`` of the pages (and on two at least):
  "ACME - Annual report 2024", "Page 3 of 10", "Confidential"; or
- it is the first or last line of its page on pages that cluster: three at least, and at least
  ``min_fraction`` of the pages from the first of them to the last (a chapter's running title); or
- it carries the page's printed number: a bare number ("7", "- 7 -", "xii") or the number closing
  the first or last line ("Chapter 2: Usage 7"), at an offset from the physical page shared by
  ``min_fraction`` of the pages or by pages that cluster (numbering restarts in a compilation).

A bare number that is not the page's (a figure, a line of a listing) stays.

Only paginated documents (blocks with ``page``) of ``min_pages`` pages or more are touched; code and
tables are left alone, and so is a document whose every line would go (its pages are a template).
One pass over the lines: linear in the size of the document.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

from opentier.components import Block, Cleaner, Document, Dropped
from opentier_cleaners_layout.options import LayoutOptions

#: ``document.metadata`` key holding how many lines this cleaner removed.
METADATA_KEY = "headers_footers_removed"
_SKIPPED_KINDS = frozenset({"code", "table"})

_DIGITS = re.compile(r"\d+")
_MAX_NUMBERS = 3  # "Annual report 2024, page 3 of 10"
_MIN_SECTION_PAGES = 3
_ROMAN_VALUES = {"i": 1, "v": 5, "x": 10, "l": 50, "c": 100, "d": 500, "m": 1000}
# A page number closing a line: "Chapter 2: Usage 7", "- 7 -"; not part of a date or a figure.
_TRAILING_NUMBER = re.compile(r"(?<![\d.,:/])(?<!\d-)(\d{1,4}) ?[^\w\s]{0,2}$")
_SPACES = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")
# A line of nothing but a page number: "7", "- 7 -", "[7]", "7 / 10", "7 of 10".
_PAGE_NUMBER = re.compile(r"[-\u2013\u2014\[(|. ]*#(?: ?(?:/|of) ?#)?[-\u2013\u2014\])|. ]*")
# Front-matter page numbers: "iv", "Page xii".
_ROMAN_PAGE = re.compile(
    r"(?:page |p\. ?)?(?P<numeral>(?=[ivxlcdm])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3}))"
)


def line_key(line: str) -> str | None:
    """What repeats from page to page: lower case, spaces collapsed, numbers as ``#``.

    Leading and trailing numbers are dropped too, so "Annual report 2024   7" and "8   Annual
    report 2024" (odd and even pages) are one line; a page number alone is ``#``. A line without
    letters that is not a page number (a row of figures), or with more numbers than a header has
    (a log line, a table row), is never a header: ``None``.
    """
    line = _SPACES.sub(" ", line.strip())
    key = line.lower()
    roman = _ROMAN_PAGE.fullmatch(key)
    if roman is not None:  # "xii" or "XII", not a word such as "Mix"
        numeral = line[roman.start("numeral") :]
        if numeral.islower() or numeral.isupper():
            return "#"
    key = _DIGITS.sub("#", key)
    if key.count("#") > _MAX_NUMBERS:
        return None
    if not _LETTER.search(key):
        return "#" if _PAGE_NUMBER.fullmatch(key) else None
    return key.strip("# ")


def printed_page_number(line: str, *, bare: bool) -> int | None:
    """The page number a line may carry: a bare one ("7", "- 7 -", "7 / 10", "xii"), or the number
    closing a running title ("Chapter 2: Usage 7")."""
    if not bare:
        match = _TRAILING_NUMBER.search(line)
        return int(match.group(1)) if match else None
    match = _DIGITS.search(line)
    if match is not None:
        return int(match.group())
    numeral = _ROMAN_PAGE.fullmatch(_SPACES.sub(" ", line.strip().lower()))
    return None if numeral is None else _roman_value(numeral.group("numeral"))


def _roman_value(numeral: str) -> int:
    values = [_ROMAN_VALUES[char] for char in numeral]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A line near the top or the bottom of a page."""

    ref: tuple[int, int]  # (block index, line index)
    key: str
    outermost: bool  # the very first or very last line of its page
    offset: int | None  # physical page - printed page, if the line may carry the page number


def find_running_lines(
    blocks: list[Block], lines: list[list[str]], *, window: int, min_fraction: float, min_pages: int
) -> set[tuple[int, int]]:
    """``(block index, line index)`` of every header or footer line; ``lines`` are the blocks' lines."""
    lines_of_page: dict[int, list[tuple[int, int]]] = {}
    for block_index, block in enumerate(blocks):
        if block.page is None or block.kind in _SKIPPED_KINDS:
            continue
        refs = lines_of_page.setdefault(block.page, [])
        refs.extend((block_index, i) for i, line in enumerate(lines[block_index]) if line.strip())
    if len(lines_of_page) < min_pages:
        return set()

    candidates: list[_Candidate] = []
    key_pages: dict[str, set[int]] = defaultdict(set)  # pages where a text is among the edge lines
    outer_pages: dict[str, set[int]] = defaultdict(set)  # pages where it is the first or last line
    offset_pages: dict[int, set[int]] = defaultdict(set)  # pages whose number is at this offset
    for page, refs in lines_of_page.items():
        if not refs:
            continue
        edges = refs if len(refs) <= 2 * window else refs[:window] + refs[-window:]
        outer = {refs[0], refs[-1]}
        for ref in edges:
            line = lines[ref[0]][ref[1]]
            key = line_key(line)
            if key is None:
                continue
            outermost, bare = ref in outer, key == "#"
            number = printed_page_number(line, bare=bare) if bare or outermost else None
            offset = None if number is None else page - number
            candidates.append(_Candidate(ref, key, outermost, offset))
            if offset is not None:
                offset_pages[offset].add(page)
            if not bare:
                key_pages[key].add(page)
                if outermost:
                    outer_pages[key].add(page)

    threshold = max(2, math.ceil(min_fraction * len(lines_of_page)))

    def clustered(pages: set[int]) -> bool:
        """On three pages at least, and on ``min_fraction`` of the pages from the first to the last."""
        return len(pages) >= _MIN_SECTION_PAGES and len(pages) >= min_fraction * (max(pages) - min(pages) + 1)

    def running(candidate: _Candidate) -> bool:
        if candidate.offset is not None:
            pages = offset_pages[candidate.offset]
            if len(pages) >= threshold or clustered(pages):
                return True
        if candidate.key == "#":  # a bare number that is not the page's: a figure, a listing's line
            return False
        if len(key_pages[candidate.key]) >= threshold:
            return True
        return candidate.outermost and clustered(outer_pages[candidate.key])

    return {candidate.ref for candidate in candidates if running(candidate)}


def remove_lines(blocks: list[Block], lines: list[list[str]], drop: set[tuple[int, int]]) -> list[Block]:
    """``blocks`` without the ``drop`` lines; blocks left empty disappear."""
    by_block: dict[int, set[int]] = {}
    for block_index, line_index in drop:
        by_block.setdefault(block_index, set()).add(line_index)
    kept: list[Block] = []
    for block_index, block in enumerate(blocks):
        dropped = by_block.get(block_index)
        if dropped:
            block.text = "\n".join(line for i, line in enumerate(lines[block_index]) if i not in dropped)
        if block.text.strip():
            kept.append(block)
    return kept


class HeadersFootersCleaner(Cleaner):
    name = "headers-footers"
    description = "Removes page headers/footers repeated across the pages of a paginated document."

    def __init__(self, options: LayoutOptions | None = None) -> None:
        self.configure(options or LayoutOptions())

    def configure(self, options: LayoutOptions) -> None:
        self.window = options.header_lines
        self.min_fraction = options.header_min_fraction
        self.min_pages = options.header_min_pages

    async def clean(self, document: Document) -> Document | Dropped:
        if all(block.page is None for block in document.blocks):
            return document
        lines = [block.text.split("\n") for block in document.blocks]
        drop = find_running_lines(
            document.blocks,
            lines,
            window=self.window,
            min_fraction=self.min_fraction,
            min_pages=self.min_pages,
        )
        if len(drop) == sum(1 for block_lines in lines for line in block_lines if line.strip()):
            # Every line "repeats": the pages are a template (a form, a test file), and these
            # lines are the document, not its furniture.
            drop = set()
        if drop:
            document.blocks = remove_lines(document.blocks, lines, drop)
        document.metadata[METADATA_KEY] = len(drop)
        return document
