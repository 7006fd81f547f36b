"""The ``unicode`` cleaner: NFC, and Latin typographic ligatures spelled out."""

from __future__ import annotations

import unicodedata

from opentier.components import Cleaner, Document, Dropped

# U+FB00..U+FB06 (ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ): PDF text extraction leaves them in, and "ﬁnd" never matches "find".
_LIGATURES = str.maketrans({chr(c): unicodedata.normalize("NFKC", chr(c)) for c in range(0xFB00, 0xFB07)})


def normalise_unicode(text: str) -> str:
    """NFC (composed accents compare and search equal) with typographic ligatures expanded."""
    return unicodedata.normalize("NFC", text.translate(_LIGATURES))


class UnicodeCleaner(Cleaner):
    name = "unicode"
    description = "Unicode NFC normalisation; typographic ligatures (ﬁ, ﬂ) spelled out."

    async def clean(self, document: Document) -> Document | Dropped:
        document.map_text(normalise_unicode)
        if document.title is not None:
            document.title = normalise_unicode(document.title)
        return document
