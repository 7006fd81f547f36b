"""Plain-text loader: any encoding, detected; one document per source.

Bytes that decode to mostly control characters or replacement characters are binary data, not text in
some encoding: such a source fails (:data:`MAX_BINARY_SHARE`) rather than filling chunks with noise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from charset_normalizer import from_bytes

from opentier import hookimpl
from opentier.components import Document, Loader, Source
from opentier.errors import DocumentLoadError

_PREFERENCE = {name: rank for rank, name in enumerate(["cp1252", "latin_1", "cp1251", "koi8_r"])}
#: Chaos scores this close to the best are a tie: on short texts they differ by a character or two.
_CHAOS_TIE = 0.1
#: Old Macintosh and HP code pages fit Western text as well as Windows ones, but are rarely what it is.
_RARE = ("mac_", "hp_")
#: A text whose share of control (other than whitespace) and replacement characters exceeds this is binary.
MAX_BINARY_SHARE = 0.05
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def binary_share(text: str) -> float:
    """The share of ``text`` that no text has: C0/C1 controls other than whitespace, and U+FFFD."""
    if not text:
        return 0.0
    odd = sum(
        1
        for char in text
        if char == "\ufffd" or (char not in _TEXT_CONTROLS and (char < " " or "\x7f" <= char <= "\x9f"))
    )
    return odd / len(text)


def decode(data: bytes) -> tuple[str, str]:
    """Text and the encoding it was read with; UTF-8 first, then detection, never an exception."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    matches = list(from_bytes(data))
    if not matches:
        return data.decode("utf-8", errors="replace"), "utf-8 (with replacements)"
    # Short texts often fit several code pages about equally well; then prefer a widespread one that
    # reads as a language, whatever a few characters' worth of chaos say.
    least_chaos = min(m.chaos for m in matches)
    best = min(
        (m for m in matches if m.chaos <= least_chaos + _CHAOS_TIE),
        key=lambda m: (
            m.encoding.startswith(_RARE),
            -round(m.coherence, 2),
            _PREFERENCE.get(m.encoding, len(_PREFERENCE)),
            m.chaos,
        ),
    )
    return str(best), best.encoding


class TextLoader(Loader):
    name = "text"
    description = "Plain text in any encoding (detected)."
    media_types = frozenset({"text/plain"})
    extensions = frozenset({".txt", ".text", ".log"})

    async def load(self, source: Source) -> AsyncIterator[Document]:
        data = await asyncio.to_thread(source.read_bytes)
        text, encoding = await asyncio.to_thread(decode, data)
        share = await asyncio.to_thread(binary_share, text)
        if share > MAX_BINARY_SHARE:
            raise DocumentLoadError(
                f"{source.uri}: not text: {share:.0%} of it decodes to control or replacement characters "
                f"(read as {encoding}); binary data is not indexed"
            )
        title = source.uri.rsplit("/", 1)[-1] or None
        yield Document.from_text(
            text,
            source=source.uri,
            title=title,
            media_type="text/plain",
            metadata={**source.metadata, "encoding": encoding},
        )


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    register(TextLoader())
