"""The ``mojibake`` cleaner: repairs text that was decoded with the wrong codec, with ftfy."""

from __future__ import annotations

import asyncio

import ftfy

from opentier.components import Cleaner, Document, Dropped

# Only the encoding repairs: the other fixes ftfy offers either belong to another cleaner
# (NFC, ligatures, control characters) or change correct text (curly quotes, full-width CJK
# punctuation, a literal "&amp;" in plain text or code).
_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=True,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=False,
    normalization=None,
)


def repair_mojibake(text: str) -> str:
    """``text`` with mojibake ("CafÃ©", "â€”") decoded back; correct text comes back unchanged."""
    if text.isascii():  # no mojibake without non-ASCII characters; the common case, made free
        return text
    return ftfy.fix_text(text, _CONFIG)


def _repair(document: Document) -> None:
    document.map_text(repair_mojibake)
    if document.title is not None:
        document.title = repair_mojibake(document.title)


class MojibakeCleaner(Cleaner):
    name = "mojibake"
    description = "Repairs mojibake (UTF-8 read as cp1252/latin-1, and the like) with ftfy."

    async def clean(self, document: Document) -> Document | Dropped:
        await asyncio.to_thread(_repair, document)
        return document
