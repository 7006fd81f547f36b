"""PDF loader (pypdf): paragraphs with their 1-based page numbers; title and author from the metadata.

Pages are read one at a time in a worker thread, so the event loop stays free and a cancelled ingestion
stops between two pages. A file on disk is read through its handle, not loaded whole.

Hostile files are bounded (docs/ingestion.md, "Limits of the loaders"): at most :data:`MAX_PAGES` pages, and
each page's content is decompressed to at most :data:`MAX_PAGE_CONTENT_BYTES` and parsed for at most
:data:`MAX_PAGE_OPERATIONS` operands and operators; a page over these is skipped, not the document.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from pypdf import PasswordType, PdfReader, apply_configuration
from pypdf.errors import DependencyError, LimitReachedError

from opentier import hookimpl
from opentier.components import Block, Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier_loader_pdf.paragraphs import page_paragraphs

MEDIA_TYPE = "application/pdf"
#: The PDF header may follow up to 1 KiB of junk (PDF 1.7, annex H).
HEADER_WINDOW = 1024
#: More pages than this and the PDF is refused before any is read (a page tree of one page repeated).
MAX_PAGES = 10_000
#: A page whose content streams decompress to more than this is skipped (a FlateDecode "bomb").
MAX_PAGE_CONTENT_BYTES = 16 * 1024 * 1024
#: Parsing budget of a page's content (operands, operators, array elements), pypdf's own accounting:
#: a dense page of text uses some tens of thousands; parsing memory grows with it (about 1 kB each).
MAX_PAGE_OPERATIONS = 150_000

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
            if metadata["page_count"] > MAX_PAGES:
                raise DocumentLoadError(
                    f"{source.uri}: {metadata['page_count']} pages, more than this loader reads ({MAX_PAGES})"
                )
            blocks: list[Block] = []
            empty_pages = 0
            over_limit: list[int] = []
            for number in range(1, metadata["page_count"] + 1):
                paragraphs = await asyncio.to_thread(read_page, reader, number, source.uri)
                if paragraphs is None:
                    over_limit.append(number)
                    continue
                blocks.extend(Block(text, page=number) for text in paragraphs)
                empty_pages += not paragraphs
        finally:
            await asyncio.to_thread(_close, reader, stream)
        if not blocks:
            if over_limit:
                raise DocumentLoadError(
                    f"{source.uri}: no page has text within the loader's limits; page(s) "
                    f"{', '.join(map(str, over_limit[:10]))} went over them (content larger than "
                    f"{MAX_PAGE_CONTENT_BYTES // 2**20} MiB decompressed, "
                    f"or {MAX_PAGE_OPERATIONS} operations)"
                )
            raise DocumentLoadError(
                f"{source.uri}: none of its {metadata['page_count']} pages has text to extract "
                "(scanned pages need OCR, which this loader does not do)"
            )
        if empty_pages:
            metadata["pages_without_text"] = empty_pages
        if over_limit:
            metadata["pages_over_limit"] = over_limit
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


def read_page(reader: PdfReader, number: int, uri: str) -> list[str] | None:
    """The paragraphs of page ``number`` (1-based); None when the page goes over the limits."""
    try:
        with apply_configuration(
            zlib_maximum_output_length=MAX_PAGE_CONTENT_BYTES,
            stream_parsing_work_maximum_count=MAX_PAGE_OPERATIONS,
        ):
            paragraphs = page_paragraphs(reader.pages[number - 1])
    except LimitReachedError as err:
        log.warning("%s: page %d skipped, over the loader's limits: %s", uri, number, err)
        reader.resolved_objects.clear()
        return None
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
