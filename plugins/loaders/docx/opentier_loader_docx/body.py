"""A Word document's body as blocks: headings by style, paragraphs, lists, tables (python-docx)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from docx.document import Document as WordDocument
from docx.table import Table
from docx.text.paragraph import Paragraph

from opentier.components import Block

_HEADING_STYLE = re.compile(r"heading (\d+)")
_LIST_STYLE = re.compile(r"list (bullet|number|continue|paragraph)?\s*(\d*)")


@dataclass(slots=True)
class Body:
    blocks: list[Block]
    #: Text of the first paragraph styled "Title" (a title when the core properties have none).
    title: str | None = None
    list_items: list[str] = field(default_factory=list)


def read_body(document: WordDocument) -> Body:
    body = Body(blocks=[])
    numbering = _Numbering(document)
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            _flush_list(body)
            rows = _table_rows(item)
            if rows:
                body.blocks.append(Block("\n".join(rows), "table"))
            continue
        # Word lays a paragraph out as one flow: newlines and runs of spaces in its XML read as one space.
        text = " ".join(item.text.split())
        if not text:
            continue
        style = _style_name(item)
        level = _heading_level(item, style)
        if level:
            _flush_list(body)
            body.blocks.append(Block(text, "heading", level=level))
            if style == "title" and body.title is None:
                body.title = text
            continue
        marker = numbering.marker(item, style)
        if marker is not None:
            body.list_items.append(f"{marker} {text}")
            continue
        _flush_list(body)
        body.blocks.append(Block(text))
    _flush_list(body)
    return body


def _flush_list(body: Body) -> None:
    if body.list_items:
        body.blocks.append(Block("\n".join(body.list_items), "list"))
        body.list_items = []


def _style_name(paragraph: Paragraph) -> str:
    try:
        style = paragraph.style
    except (KeyError, ValueError):  # a style id the styles part does not define
        return ""
    return (style.name or "").strip().lower() if style is not None else ""


def _heading_level(paragraph: Paragraph, style: str) -> int:
    """1.. for headings: the built-in "Title" and "Heading N" styles, else an outline level."""
    if style == "title":
        return 1
    match = _HEADING_STYLE.fullmatch(style)
    if match:
        return max(1, int(match.group(1)))
    # Custom heading styles carry an outline level (0 = level 1; 9 = body text).
    for element in _style_chain(paragraph):
        values = element.xpath("./w:pPr/w:outlineLvl/@w:val")
        if values:
            level = int(values[0]) if str(values[0]).isdigit() else 9
            return level + 1 if level < 9 else 0
    return 0


def _style_chain(paragraph: Paragraph) -> list[Any]:
    """The paragraph's own XML element, then its style's, then the styles it is based on."""
    chain: list[Any] = [paragraph._p]
    try:
        style = paragraph.style
    except (KeyError, ValueError):
        return chain
    seen = 0
    while style is not None and seen < 16:
        chain.append(style.element)
        style = style.base_style
        seen += 1
    return chain


class _Numbering:
    """Markers for list paragraphs: ``-`` for bullets, ``1.`` ``2.`` for numbered lists, by level."""

    def __init__(self, document: WordDocument) -> None:
        try:
            self._part = document.part.numbering_part.element
        except (KeyError, NotImplementedError):
            self._part = None
        self._formats: dict[tuple[str, int], str] = {}
        self._counters: dict[tuple[str, int], int] = {}

    def marker(self, paragraph: Paragraph, style: str) -> str | None:
        num_id, level = self._num_pr(paragraph)
        list_style = _LIST_STYLE.fullmatch(style)
        if num_id is None:
            if list_style is None or list_style.group(1) in {None, "continue", "paragraph"}:
                return None
            num_id = f"style:{style}"
            level = max(0, int(list_style.group(2) or 1) - 1)
            ordered = list_style.group(1) == "number"
        elif num_id == "0":  # numbering explicitly removed
            return None
        else:
            ordered = self._format(num_id, level) not in {"bullet", "none", ""}
        indent = "  " * level
        if not ordered:
            return f"{indent}-"
        key = (num_id, level)
        self._counters[key] = self._counters.get(key, 0) + 1
        for deeper in [k for k in self._counters if k[0] == num_id and k[1] > level]:
            del self._counters[deeper]
        return f"{indent}{self._counters[key]}."

    @staticmethod
    def _num_pr(paragraph: Paragraph) -> tuple[str | None, int]:
        for element in _style_chain(paragraph):
            ids = element.xpath("./w:pPr/w:numPr/w:numId/@w:val")
            if ids:
                levels = paragraph._p.xpath("./w:pPr/w:numPr/w:ilvl/@w:val") or element.xpath(
                    "./w:pPr/w:numPr/w:ilvl/@w:val"
                )
                level = int(levels[0]) if levels and str(levels[0]).isdigit() else 0
                return str(ids[0]), min(level, 8)
        return None, 0

    def _format(self, num_id: str, level: int) -> str:
        key = (num_id, level)
        if key not in self._formats:
            self._formats[key] = self._lookup_format(num_id, level)
        return self._formats[key]

    def _lookup_format(self, num_id: str, level: int) -> str:
        if self._part is None or not num_id.isdigit():
            return "bullet"
        abstract = self._part.xpath(f'./w:num[@w:numId="{num_id}"]/w:abstractNumId/@w:val')
        if not abstract or not str(abstract[0]).isdigit():
            return "bullet"
        formats = self._part.xpath(
            f'./w:abstractNum[@w:abstractNumId="{abstract[0]}"]/w:lvl[@w:ilvl="{level}"]/w:numFmt/@w:val'
        )
        return str(formats[0]) if formats else "bullet"


def _table_rows(table: Table) -> list[str]:
    """One line per row, cells separated by `` | `` (a merged cell counted once)."""
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows
