"""DOCX loader (python-docx): headings by paragraph style, paragraphs, lists, tables; core properties.

python-docx rather than the standard library's XML: it resolves style names and inheritance (what makes a
"Heading 2" a heading), merged table cells and the body order of paragraphs and tables, which would
otherwise be rewritten here; it parses with lxml with entity resolution off.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from typing import IO, Any

import docx

from opentier import hookimpl
from opentier.components import Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier_loader_docx.body import read_body

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
#: python-docx holds every part in memory: refuse archives that expand past this (zip bombs).
MAX_EXPANDED_BYTES = 512 * 1024 * 1024
#: A part that expands more than this many times its compressed size is a zip bomb, not a document:
#: Word's XML compresses about 5 to 20 times, images hardly at all; a bomb of spaces about 1,000 times.
MAX_RATIO = 100
#: Parts smaller than this expanded are never refused for their ratio (tiny parts compress oddly).
RATIO_FLOOR_BYTES = 1024 * 1024


class DocxLoader(Loader):
    name = "docx"
    description = "Word DOCX: headings by style, paragraphs, lists, tables; title and author."
    media_types = frozenset({MEDIA_TYPE})
    extensions = frozenset({".docx"})

    async def load(self, source: Source) -> AsyncIterator[Document]:
        yield await asyncio.to_thread(to_document, source)


def to_document(source: Source) -> Document:
    """Open, check and read one DOCX (runs in a worker thread)."""
    try:
        stream: IO[bytes] = (
            open(source.path, "rb")  # noqa: SIM115  # closed below
            if source.data is None and source.path is not None
            else io.BytesIO(source.read_bytes())
        )
    except OSError as err:
        raise DocumentLoadError(f"{source.uri}: cannot be read: {err.strerror or err}") from err
    with stream:
        _check_archive(stream, source.uri)
        stream.seek(0)
        try:
            word = docx.Document(stream)
            body = read_body(word)
            properties = _core_properties(word)
        except DocumentLoadError:
            raise
        except Exception as err:  # python-docx and lxml raise KeyError, ValueError, XMLSyntaxError, ...
            raise DocumentLoadError(
                f"{source.uri}: not a readable DOCX document ({type(err).__name__}: {err})"
            ) from err
    first_heading = next((block.text for block in body.blocks if block.kind == "heading"), None)
    title = properties.pop("title", None) or body.title or first_heading or PurePosixPath(source.uri).name
    return Document(
        blocks=body.blocks,
        source=source.uri,
        title=title or None,
        media_type=MEDIA_TYPE,
        metadata={**properties, **source.metadata},
    )


def _check_archive(stream: IO[bytes], uri: str) -> None:
    """A clear error for what is not a DOCX at all, before python-docx reads it into memory."""
    try:
        with zipfile.ZipFile(stream) as archive:
            names = set(archive.namelist())
            entries = archive.infolist()
            expanded = sum(info.file_size for info in entries)
    except zipfile.BadZipFile as err:
        stream.seek(0)
        legacy = stream.read(8) == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        reason = (
            "it is a legacy Word .doc (binary) file; save it as .docx"
            if legacy
            else f"not a DOCX file, or a damaged or truncated one ({err})"
        )
        raise DocumentLoadError(f"{uri}: {reason}") from err
    if "word/document.xml" not in names and "[Content_Types].xml" not in names:
        raise DocumentLoadError(f"{uri}: a ZIP archive but not a Word document (no word/document.xml)")
    if expanded > MAX_EXPANDED_BYTES:
        raise DocumentLoadError(
            f"{uri}: expands to {expanded // 2**20} MiB, over the {MAX_EXPANDED_BYTES // 2**20} MiB limit"
        )
    for info in entries:
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DocumentLoadError(
                f"{uri}: its part {info.filename} expands {info.file_size // max(info.compress_size, 1)} "
                f"times (to {info.file_size // 2**20} MiB), more than a document does ({MAX_RATIO} times): "
                "a zip bomb"
            )


def _core_properties(word: Any) -> dict[str, Any]:
    """Title, author, subject, keywords, last editor and dates, where the document sets them."""
    props = word.core_properties
    found: dict[str, Any] = {}
    for key, attribute in (
        ("title", "title"),
        ("author", "author"),
        ("subject", "subject"),
        ("keywords", "keywords"),
        ("category", "category"),
        ("last_modified_by", "last_modified_by"),
        ("language", "language"),
    ):
        value = getattr(props, attribute, None)
        if isinstance(value, str) and value.strip():
            found[key] = " ".join(value.split())
    for key, attribute in (("created", "created"), ("modified", "modified")):
        date = getattr(props, attribute, None)
        if date is not None:
            found[key] = date.isoformat()
    return found


@hookimpl
def register_loaders(register: Callable[[Loader], None]) -> None:
    register(DocxLoader())
