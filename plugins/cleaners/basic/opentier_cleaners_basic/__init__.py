"""Small cleaners every pipeline wants: Unicode normalisation and whitespace normalisation."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from opentier import hookimpl
from opentier.components import Cleaner, Document, Dropped

# C0/C1 control characters except tab, newline and carriage return; zero-width and BOM characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_whitespace(text: str) -> str:
    """One space between words, no control characters, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


class UnicodeCleaner(Cleaner):
    name = "unicode"
    description = "Unicode NFC normalisation (composed accents compare and search equal)."

    async def clean(self, document: Document) -> Document | Dropped:
        document.map_text(lambda text: unicodedata.normalize("NFC", text))
        return document


class WhitespaceCleaner(Cleaner):
    name = "whitespace"
    description = "Removes control characters, collapses runs of spaces and blank lines."

    async def clean(self, document: Document) -> Document | Dropped:
        document.map_text(normalise_whitespace)
        if not document.blocks:
            return Dropped("the document has no text left after whitespace normalisation")
        return document


@hookimpl
def register_cleaners(register: Callable[[Cleaner], None]) -> None:
    register(UnicodeCleaner())
    register(WhitespaceCleaner())
