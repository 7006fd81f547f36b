"""Markdown loader: headings kept as structure, YAML front matter as metadata; one document per source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath

from opentier_loader_text import decode

from opentier import hookimpl
from opentier.components import Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier_loader_markdown.frontmatter import parse_front_matter
from opentier_loader_markdown.parse import parse

MEDIA_TYPE = "text/markdown"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")


class MarkdownLoader(Loader):
    name = "markdown"
    description = "Markdown: headings as structure, lists, tables, code; YAML front matter as metadata."
    media_types = frozenset({"text/markdown", "text/x-markdown"})
    extensions = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mkdn"})

    async def load(self, source: Source) -> AsyncIterator[Document]:
        data = await read(source)
        yield await asyncio.to_thread(to_document, data, source)


def to_document(data: bytes, source: Source) -> Document:
    """Decode, parse and title one Markdown source (runs in a worker thread)."""
    if b"\x00" in data[:8192] and not data.startswith(_UTF16_32_BOMS):
        raise DocumentLoadError(f"{source.uri}: holds binary data, not Markdown text")
    text, encoding = decode(data)
    raw_front_matter, blocks = parse(text)
    front_matter = parse_front_matter(raw_front_matter, source.uri) if raw_front_matter else {}
    title = front_matter.pop("title", None)
    title = str(title) if isinstance(title, str | int | float) else None
    if not title or not title.strip():
        first_h1 = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
        title = first_h1 or PurePosixPath(source.uri).name or None
    return Document(
        blocks=blocks,
        source=source.uri,
        title=title.strip() if title else None,
        media_type=MEDIA_TYPE,
        metadata={**front_matter, **source.metadata, "encoding": encoding},
    )


async def read(source: Source) -> bytes:
    """The source's bytes, read off the event loop; an unreadable file is a load error."""
    try:
        return await asyncio.to_thread(source.read_bytes)
    except OSError as err:
        raise DocumentLoadError(f"{source.uri}: cannot be read: {err.strerror or err}") from err


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    register(MarkdownLoader())
