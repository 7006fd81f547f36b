"""HTML loader: the page's main content as structured blocks, in whatever encoding it came."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath

from opentier import hookimpl
from opentier.components import Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier_loader_html.encoding import decode_html
from opentier_loader_html.extract import extract

MEDIA_TYPE = "text/html"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")


class HtmlLoader(Loader):
    name = "html"
    description = "HTML: main content (no scripts, styles, navigation), headings, lists, tables."
    media_types = frozenset({"text/html", "application/xhtml+xml"})
    extensions = frozenset({".html", ".htm", ".xhtml"})

    async def load(self, source: Source) -> AsyncIterator[Document]:
        try:
            data = await asyncio.to_thread(source.read_bytes)
        except OSError as err:
            raise DocumentLoadError(f"{source.uri}: cannot be read: {err.strerror or err}") from err
        yield await asyncio.to_thread(to_document, data, source)


def to_document(data: bytes, source: Source) -> Document:
    """Decode, extract and title one page (runs in a worker thread)."""
    if b"\x00" in data[:8192] and not data.startswith(_UTF16_32_BOMS):
        raise DocumentLoadError(f"{source.uri}: holds binary data, not HTML")
    text, encoding = decode_html(data, source.media_type)
    page = extract(text)
    return Document(
        blocks=page.blocks,
        source=source.uri,
        title=page.title or PurePosixPath(source.uri.split("?", 1)[0]).name or None,
        media_type=MEDIA_TYPE,
        metadata={**page.metadata, **source.metadata, "encoding": encoding},
    )


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    register(HtmlLoader())
