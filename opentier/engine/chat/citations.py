"""Citation markers in a streamed answer: parsed as the text arrives, verified against the sources.

A marker is a bracketed list of source numbers: ``[3]``, ``[1, 2]``, ``[1][2]``. Only numbers of
sources that were really given to the model become citations; a marker naming any other number is
removed from the text (``drop``) or rewritten visibly (``flag``: ``[7]`` → ``[7?]``), so a reader never
sees a citation that points nowhere. A marker split across deltas (``"[1"`` then ``"2]"``) is held
back until it is complete, and never more than that: the text before it goes out at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

#: A complete marker: numbers of at most four digits, separated by commas.
MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")
#: What may still grow into a marker when more text arrives (from its ``[`` to the end).
PARTIAL = re.compile(r"\[\s*(?:\d{1,4}(?:\s*,\s*\d{1,4})*\s*,?\s*)?")
#: A longer tail is text, not a marker in the making: bounds what is held back.
MAX_MARKER_CHARS = 48

CitationMode = Literal["drop", "flag"]


@dataclass(frozen=True, slots=True)
class Verified:
    """Text ready to send, and the source numbers it cites for the first time (in order)."""

    text: str
    new_citations: tuple[int, ...] = ()


@dataclass
class CitationFilter:
    """Feeds on an answer's deltas and returns what may be shown, with the citations it makes."""

    valid: Collection[int]
    mode: CitationMode = "drop"
    flag_format: str = "{number}?"
    #: Cited source numbers, in order of first appearance.
    cited: list[int] = field(default_factory=list)
    #: Numbers of markers that named no given source, in order of appearance.
    unverified: list[int] = field(default_factory=list)
    _held: str = ""

    def feed(self, delta: str) -> Verified:
        """The part of ``_held + delta`` that can be shown now; a possible partial marker is kept."""
        text = self._held + delta
        cut = _partial_start(text)
        self._held = text[cut:]
        return self._verify(text[:cut])

    def finish(self) -> Verified:
        """Whatever is held back, as text (an unfinished marker is no marker)."""
        rest, self._held = self._held, ""
        return self._verify(rest)

    @property
    def held(self) -> str:
        return self._held

    def _verify(self, text: str) -> Verified:
        if "[" not in text:
            return Verified(text)
        before = len(self.cited)
        verified = MARKER.sub(self._rewrite, text)
        return Verified(verified, tuple(self.cited[before:]))

    def _rewrite(self, match: re.Match[str]) -> str:
        numbers = [int(part) for part in match.group(1).split(",")]
        good = [number for number in numbers if number in self.valid]
        for number in numbers:
            if number not in self.valid:
                self.unverified.append(number)
            elif number not in self.cited:
                self.cited.append(number)
        if len(good) == len(numbers):
            return match.group(0)
        if self.mode == "drop":
            return f"[{', '.join(map(str, good))}]" if good else ""
        shown = [str(n) if n in self.valid else self.flag_format.format(number=n) for n in numbers]
        return f"[{', '.join(shown)}]"


def _partial_start(text: str) -> int:
    """Where a possible unfinished marker at the end of ``text`` begins (``len(text)`` if none).

    A marker holds no ``[``, so only the last one can start it.
    """
    start = text.rfind("[")
    if start < 0 or len(text) - start > MAX_MARKER_CHARS:
        return len(text)
    return start if PARTIAL.fullmatch(text, start) else len(text)
