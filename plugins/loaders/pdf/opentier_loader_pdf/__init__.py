"""PDF loader (pypdf): paragraphs with their 1-based page numbers; title and author from the metadata.

Pages are read one at a time in a worker thread, so the event loop stays free and a cancelled ingestion
stops between two pages. A file on disk is read through its handle, not loaded whole.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from opentier import hookimpl
from opentier.components import Block, Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier_loader_pdf.paragraphs import page_paragraphs

MEDIA_TYPE = "application/pdf"
#: The PDF header may follow up to 1 KiB of junk (PDF 1.7, annex H).
HEADER_WINDOW = 1024

log = logging.getLogger(__name__)


class PdfLoader(Loader):
    name = "pdf"
    description = "PDF (pypdf): paragraphs with page numbers; title, author and page count."
    media_types = frozenset({"application/pdf", "application/x-pdf"})
    extensions = frozenset({".pdf"})

    async def load(self, source: Source) -> AsyncIterator[Document]:
        reader, stream = await asyncio.to_thread(open_pdf, source)
        try:
            metadata = await asyncio.to_thread(describe, reader)
            blocks: list[Block] = []
            empty_pages = 0
            for number in range(1, metadata["page_count"] + 1):
                paragraphs = await asyncio.to_thread(read_page, reader, number, source.uri)
                blocks.extend(Block(text, page=number) for text in paragraphs)
                empty_pages += not paragraphs
        finally:
            await asyncio.to_thread(_close, reader, stream)
        if not blocks:
            raise DocumentLoadError(
                f"{source.uri}: none of its {metadata['page_count']} pages has text to extract "
                "(scanned pages need OCR, which this loader does not do)"
            )
        if empty_pages:
            metadata["pages_without_text"] = empty_pages
        title = metadata.pop("title", None) or PurePosixPath(source.uri).name or None
        yield Document(
            blocks=blocks,
            source=source.uri,
            title=title,
            media_type=MEDIA_TYPE,
            metadata={**metadata, **source.metadata},
        )


def open_pdf(source: Source) -> tuple[PdfReader, BinaryIO]:
    """A reader over the source, decrypted if need be; every failure is a :class:`DocumentLoadError`."""
    try:
        stream: BinaryIO = (
            open(source.path, "rb")  # noqa: SIM115  # closed by load() once every page is read
            if source.data is None and source.path is not None
            else io.BytesIO(source.read_bytes())
        )
    except OSError as err:
        raise DocumentLoadError(f"{source.uri}: cannot be read: {err.strerror or err}") from err
    try:
        if b"%PDF-" not in stream.read(HEADER_WINDOW):
            raise DocumentLoadError(f"{source.uri}: not a PDF file (no %PDF- header)")
        stream.seek(0)
        reader = PdfReader(stream)
        if reader.is_encrypted:
            _decrypt(reader, source)
        len(reader.pages)  # walks the page tree now, so that a damaged one fails here
    except DocumentLoadError:
        stream.close()
        raise
    except Exception as err:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError, ...)
        stream.close()
        raise DocumentLoadError(
            f"{source.uri}: the PDF is damaged or truncated ({type(err).__name__}: {err})"
        ) from err
    return reader, stream


def _decrypt(reader: PdfReader, source: Source) -> None:
    password = source.options.get("password") or ""
    try:
        result = reader.decrypt(password)
    except DependencyError as err:
        raise DocumentLoadError(
            f"{source.uri}: the PDF is encrypted with AES, which needs the 'cryptography' package: {err}"
        ) from err
    if result == PasswordType.NOT_DECRYPTED:
        hint = "the password given is wrong" if password else "give it as the source option 'password'"
        raise DocumentLoadError(f"{source.uri}: the PDF is encrypted and needs a password ({hint})")


def describe(reader: PdfReader) -> dict[str, Any]:
    """Page count, and title, author, subject, keywords, creator, producer and dates where present."""
    found: dict[str, Any] = {"page_count": len(reader.pages)}
    try:
        info = reader.metadata
    except Exception as err:  # a damaged info dictionary loses the metadata, not the document
        log.warning("PDF metadata unreadable, ignored: %s: %s", type(err).__name__, err)
        return found
    if info is None:
        return found
    for key, attribute in (
        ("title", "title"),
        ("author", "author"),
        ("subject", "subject"),
        ("keywords", "keywords"),
        ("creator", "creator"),
        ("producer", "producer"),
    ):
        value = getattr(info, attribute, None)
        if isinstance(value, str) and value.strip():
            found[key] = " ".join(value.split())
    if "title" in found:
        found["title"] = found["title"].removeprefix("Microsoft Word - ")
    for key, attribute in (("created", "creation_date"), ("modified", "modification_date")):
        try:
            date = getattr(info, attribute, None)
        except ValueError:  # an unparsable date string
            continue
        if date is not None:
            found[key] = date.isoformat()
    return found


def read_page(reader: PdfReader, number: int, uri: str) -> list[str]:
    """The paragraphs of page ``number`` (1-based)."""
    try:
        paragraphs = page_paragraphs(reader.pages[number - 1])
    except Exception as err:
        raise DocumentLoadError(
            f"{uri}: page {number} cannot be read, the PDF is damaged ({type(err).__name__}: {err})"
        ) from err
    # Objects parsed for this page (fonts, images) are not needed for the next: keep memory flat.
    reader.resolved_objects.clear()
    return paragraphs


def _close(reader: PdfReader, stream: BinaryIO) -> None:
    reader.close()
    stream.close()


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    register(PdfLoader())
