"""The ``min-length`` cleaner: drops documents with too little text to be worth indexing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentier.components import Cleaner, Document, Dropped
from opentier.errors import ConfigError

DEFAULT_MIN_CHARS = 20


class MinLengthCleaner(Cleaner):
    name = "min-length"
    description = "Drops documents with fewer than min_chars non-space characters (default 20)."

    def __init__(self, min_chars: int = DEFAULT_MIN_CHARS) -> None:
        self.min_chars = min_chars

    def configure(self, options: Mapping[str, Any]) -> None:
        """Read ``min_chars`` from the plugin options (``[plugins.options.basic-cleaners]``)."""
        value = options.get("min_chars", DEFAULT_MIN_CHARS)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"plugins.options.basic-cleaners.min_chars must be a whole number >= 0, not {value!r}"
            )
        self.min_chars = value

    async def clean(self, document: Document) -> Document | Dropped:
        count = 0
        for block in document.blocks:
            text = block.text
            count += len(text) - text.count(" ") - text.count("\n") - text.count("\t")
            if count >= self.min_chars:  # stop counting early: documents can be long
                break
        if count >= self.min_chars:
            return document
        return Dropped(f"only {count} characters of text; min-length requires {self.min_chars}")
