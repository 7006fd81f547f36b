"""A PDF page's text as paragraphs, from where pypdf places each line.

pypdf's plain extraction follows the content stream (so columns stay apart) but loses the layout. Its
text visitor tells where each piece of text starts; a paragraph starts where the gap to the previous line
is clearly larger than the page's usual line spacing, where the text moves back up (a new column or
region), where an indented line follows a sentence's end, or at a bullet.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

from pypdf import PageObject

_BULLETS = ("•", "◦", "▪", "‣", "●", "○", "■", "□", "➢", "►")
_SENTENCE_END = (".", ":", "!", "?", '"', "”", ")")
#: A gap this much larger than the usual line spacing separates paragraphs.
GAP_RATIO = 1.15


@dataclass(slots=True)
class _Line:
    x: float = 0.0
    y: float = 0.0
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


def page_paragraphs(page: PageObject) -> list[str]:
    """The page's paragraphs, in reading order; the lines inside one are joined by ``\\n``."""
    lines = _lines(page)
    return [paragraph for paragraph in _paragraphs(lines) if paragraph.strip()]


def _lines(page: PageObject) -> list[_Line]:
    lines: list[_Line] = []
    current = _Line()

    def visit(text: str, cm: list[float], tm: list[float], _font: Any, _size: Any) -> None:
        nonlocal current
        for index, piece in enumerate(text.split("\n")):
            if index > 0:
                lines.append(current)
                current = _Line(current.x, current.y)
            if piece and not current.parts:
                # Where the text starts on the page: the text matrix's origin through the CTM.
                current.x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
                current.y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            if piece:
                current.parts.append(piece)

    page.extract_text(visitor_text=visit)
    lines.append(current)
    return [line for line in lines if line.text]


def _paragraphs(lines: list[_Line]) -> list[str]:
    advances = [a.y - b.y for a, b in itertools.pairwise(lines) if a.y - b.y > 0.5]
    spacing = statistics.median(advances) if advances else 0.0
    paragraphs: list[list[str]] = []
    previous: _Line | None = None
    for line in lines:
        text = line.text
        if previous is None or _starts_paragraph(previous, line, text, spacing):
            paragraphs.append([])
        paragraphs[-1].append(text)
        previous = line
    return ["\n".join(paragraph) for paragraph in paragraphs]


def _starts_paragraph(previous: _Line, line: _Line, text: str, spacing: float) -> bool:
    advance = previous.y - line.y
    if abs(advance) <= 0.5:
        return False  # the same visual line, split by the extractor
    if advance < 0:
        return True  # moved up the page: a new column or region
    if spacing and advance > spacing * GAP_RATIO and advance - spacing > 1.5:
        return True
    if text.startswith(_BULLETS):
        return True
    return line.x > previous.x + 4 and previous.text.endswith(_SENTENCE_END)
