"""The ``pii`` cleaner: replaces personal data with placeholders and records what it replaced."""

from __future__ import annotations

import asyncio
from typing import Any

from opentier.components import Cleaner, Document, Dropped
from opentier_cleaners_pii.detect import find_pii
from opentier_cleaners_pii.options import KINDS, Kind, PiiOptions

#: ``document.metadata`` key of the redaction record.
METADATA_KEY = "redactions"
PLACEHOLDERS: dict[Kind, str] = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}


def redact(text: str, options: PiiOptions) -> tuple[str, list[tuple[Kind, int, int]]]:
    """``text`` with each finding replaced by its placeholder, and where each placeholder now is."""
    found = find_pii(text, options.kinds, options.phone_regions)
    if not found:
        return text, []
    parts: list[str] = []
    placed: list[tuple[Kind, int, int]] = []
    position = length = 0
    for start, end, kind in found:
        parts.append(text[position:start])
        length += start - position
        placeholder = PLACEHOLDERS[kind]
        parts.append(placeholder)
        placed.append((kind, length, length + len(placeholder)))
        length += len(placeholder)
        position = end
    parts.append(text[position:])
    return "".join(parts), placed


def redact_document(document: Document, options: PiiOptions) -> None:
    """Redact the blocks and the title, and set ``document.metadata["redactions"]``.

    The record holds counts per kind and the spans of the placeholders (``block`` index, or
    ``None`` for the title; ``start``/``end`` in the redacted text), never a redacted value.
    """
    counts: dict[str, int] = {kind: 0 for kind in KINDS if kind in options.kinds}
    spans: list[dict[str, Any]] = []

    def record(where: int | None, placed: list[tuple[Kind, int, int]]) -> None:
        for kind, start, end in placed:
            counts[kind] += 1
            if len(spans) < options.max_spans:
                spans.append({"kind": kind, "block": where, "start": start, "end": end})

    if document.title:
        document.title, placed = redact(document.title, options)
        record(None, placed)
    for index, block in enumerate(document.blocks):
        block.text, placed = redact(block.text, options)
        record(index, placed)
    document.metadata[METADATA_KEY] = {"counts": counts, "spans": spans}


class PiiCleaner(Cleaner):
    name = "pii"
    description = "Redacts e-mail addresses, phone numbers and card numbers; records what it redacted."

    def __init__(self, options: PiiOptions | None = None) -> None:
        self.options = options or PiiOptions()

    def configure(self, options: PiiOptions) -> None:
        self.options = options

    async def clean(self, document: Document) -> Document | Dropped:
        await asyncio.to_thread(redact_document, document, self.options)
        return document
