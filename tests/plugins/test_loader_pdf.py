"""The ``pdf`` loader, through its entry point, on PDFs made here (fpdf2, pypdf) and shipped by others."""

from __future__ import annotations

import asyncio
import io
import os
import tracemalloc
from pathlib import Path

import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from opentier.components import Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier.plugin_manager import PluginSelection, load_plugins

# Debian packages that ship PDF manuals made with pdfTeX.
SHARED_MIME_SPEC = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
LIBTASN1_MANUAL = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")


@pytest.fixture
def loader() -> Loader:
    system = load_plugins(selection=PluginSelection(allow=["pdf"]))
    assert [info.distribution for info in system.loaded] == ["opentier-loader-pdf"]
    return system.registry.get_typed(Loader, "pdf")


async def load_one(loader: Loader, source: Source) -> Document:
    documents = [document async for document in loader.load(source)]
    assert len(documents) == 1
    return documents[0]


def report_pdf(pages: int = 3) -> bytes:
    """A real multi-page PDF: two paragraphs per page, words unique to each page, title and author."""
    pdf = FPDF()
    pdf.set_title("Quarterly Report")
    pdf.set_author("Ada Lovelace")
    pdf.set_font("Helvetica", size=11)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Engines on page {number} turn apples into numbers. " * 6)
        pdf.ln(8)
        pdf.multi_cell(0, 6, f"Zebras graze near lighthouse {number} at dusk. " * 4)
    return bytes(pdf.output())


async def test_paragraphs_pages_title_and_author(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(report_pdf(pages=3))
    document = await load_one(loader, Source(uri="reports/report.pdf", path=path))

    assert document.title == "Quarterly Report"
    assert document.media_type == "application/pdf"
    assert document.metadata["author"] == "Ada Lovelace"
    assert document.metadata["page_count"] == 3
    assert "pages_without_text" not in document.metadata
    assert [(b.kind, b.page) for b in document.blocks] == [("paragraph", n) for n in (1, 1, 2, 2, 3, 3)]
    for number in (1, 2, 3):
        first, second = [b.text for b in document.blocks if b.page == number]
        assert first.startswith(f"Engines on page {number} turn apples")
        assert "Zebras" not in first
        assert second.startswith(f"Zebras graze near lighthouse {number}")
        assert "\n" in first  # the lines of one paragraph stay apart, for de-hyphenation
    page_two = " ".join(b.text for b in document.blocks if b.page == 2)
    assert "lighthouse 1" not in page_two and "lighthouse 3" not in page_two


async def test_bytes_and_file_give_the_same_document(loader: Loader, tmp_path: Path) -> None:
    data = report_pdf(pages=2)
    (tmp_path / "r.pdf").write_bytes(data)
    from_file = await load_one(loader, Source(uri="r.pdf", path=tmp_path / "r.pdf"))
    from_bytes = await load_one(loader, Source(uri="r.pdf", data=data, media_type="application/pdf"))
    assert from_file.blocks == from_bytes.blocks


async def test_title_falls_back_to_file_name(loader: Loader) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.cell(text="No metadata here.")
    document = await load_one(loader, Source(uri="scans/untitled.pdf", data=bytes(pdf.output())))
    assert document.title == "untitled.pdf"
    assert document.text == "No metadata here."


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.98])
async def test_truncated_pdf_is_a_clear_load_error(loader: Loader, keep: float) -> None:
    data = report_pdf(pages=3)
    with pytest.raises(DocumentLoadError, match=r"broken\.pdf: the PDF is damaged or truncated") as caught:
        await load_one(loader, Source(uri="broken.pdf", data=data[: int(len(data) * keep)]))
    assert caught.value.stage == "load"
    assert "Traceback" not in str(caught.value)


async def test_damaged_page_content_loses_that_page_only(loader: Loader) -> None:
    """pypdf logs an undecodable content stream and reads the page as empty: the page is counted."""
    data = bytearray(report_pdf(pages=2))
    start = data.index(b"stream\n") + len(b"stream\n")  # page 1's compressed content
    end = data.index(b"endstream", start)
    data[start:end] = b"Z" * (end - start)  # same length: the cross-reference table stays right
    document = await load_one(loader, Source(uri="mangled.pdf", data=bytes(data)))
    assert {b.page for b in document.blocks} == {2}
    assert document.metadata["pages_without_text"] == 1


async def test_not_a_pdf_is_a_load_error(loader: Loader) -> None:
    with pytest.raises(DocumentLoadError, match=r"fake\.pdf: not a PDF file \(no %PDF- header\)"):
        await load_one(loader, Source(uri="fake.pdf", data=b"<html><body>I am HTML</body></html>"))


def encrypted(user_password: str, owner_password: str, algorithm: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(report_pdf(pages=1)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
async def test_password_protected_pdf(loader: Loader, algorithm: str) -> None:
    data = encrypted("s3cret", "owner", algorithm)
    with pytest.raises(DocumentLoadError, match=r"locked\.pdf: the PDF is encrypted and needs a password"):
        await load_one(loader, Source(uri="locked.pdf", data=data))
    with pytest.raises(DocumentLoadError, match="the password given is wrong"):
        await load_one(loader, Source(uri="locked.pdf", data=data, options={"password": "guess"}))
    document = await load_one(loader, Source(uri="locked.pdf", data=data, options={"password": "s3cret"}))
    assert "Zebras graze near lighthouse 1" in document.text


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
async def test_restricted_pdf_with_empty_user_password_is_read(loader: Loader, algorithm: str) -> None:
    data = encrypted("", "owner-only", algorithm)
    assert PdfReader(io.BytesIO(data)).is_encrypted
    document = await load_one(loader, Source(uri="restricted.pdf", data=data))
    assert "Engines on page 1" in document.text
    assert document.title == "Quarterly Report"


async def test_pdf_without_text_is_a_load_error(loader: Loader) -> None:
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.rect(20, 20, 100, 60, style="F")  # a "scan": graphics, no text
    with pytest.raises(DocumentLoadError, match=r"none of its 2 pages has text.*OCR"):
        await load_one(loader, Source(uri="scan.pdf", data=bytes(pdf.output())))


async def test_pages_without_text_are_counted(loader: Loader) -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.cell(text="Cover words.")
    pdf.add_page()  # blank
    pdf.add_page()
    pdf.cell(text="Closing words.")
    document = await load_one(loader, Source(uri="gaps.pdf", data=bytes(pdf.output())))
    assert [(b.page, b.text) for b in document.blocks] == [(1, "Cover words."), (3, "Closing words.")]
    assert document.metadata["pages_without_text"] == 1


async def test_memory_stays_flat_page_by_page(loader: Loader, tmp_path: Path) -> None:
    """A 20-page PDF of ~30 MB (a noise image per page) is read with a few MB: by handle, page by page."""
    from PIL import Image

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for number in range(1, 21):
        pdf.add_page()
        pdf.cell(text=f"Photograph {number} of static.")
        image = Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3))
        pdf.image(image, x=10, y=30, w=150)
    path = tmp_path / "photos.pdf"
    pdf.output(str(path))
    size = path.stat().st_size
    assert size > 25 * 2**20

    tracemalloc.start()
    try:
        document = await load_one(loader, Source(uri="photos.pdf", path=path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [b.page for b in document.blocks] == list(range(1, 21))
    assert document.blocks[6].text == "Photograph 7 of static."
    assert peak < size / 4, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"


async def test_extraction_leaves_the_event_loop_free(loader: Loader) -> None:
    data = report_pdf(pages=40)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        document = await load_one(loader, Source(uri="long.pdf", data=data))
    finally:
        done.set()
        await task
    assert document.metadata["page_count"] == 40
    assert ticks >= 40  # the loop ran between (and during) the pages


def test_accepts_by_media_type_or_extension(loader: Loader) -> None:
    assert loader.accepts(Source(uri="paper.PDF"))
    assert loader.accepts(Source(uri="download", media_type="application/pdf"))
    assert not loader.accepts(Source(uri="paper.docx"))


@pytest.mark.skipif(
    not SHARED_MIME_SPEC.is_file(), reason=f"{SHARED_MIME_SPEC} absent (Debian package shared-mime-info)"
)
async def test_real_world_specification(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="shared-mime-info-spec.pdf", path=SHARED_MIME_SPEC))
    assert document.metadata["page_count"] == 17
    assert document.metadata["producer"].startswith("pdfTeX")
    pages = {b.page for b in document.blocks}
    assert pages == set(range(1, 18))
    on_page = {number: " ".join(b.text for b in document.blocks if b.page == number) for number in pages}
    assert "1. Introduction" in on_page[1]
    assert "Unified system" in on_page[2] and "Unified system" not in on_page[1]
    assert any(b.text == "2. Unified system" for b in document.blocks if b.page == 2)
    bullets = [b.text for b in document.blocks if b.page == 2 and b.text.startswith("•")]
    assert "• A standard way of getting the MIME type for a file." in bullets


@pytest.mark.skipif(
    not LIBTASN1_MANUAL.is_file(), reason=f"{LIBTASN1_MANUAL} absent (Debian package libtasn1-doc)"
)
async def test_real_world_manual(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="libtasn1.pdf", path=LIBTASN1_MANUAL))
    assert document.metadata["page_count"] == 36
    assert document.blocks[0].text == "Libtasn1" and document.blocks[0].page == 1
    licence = [b for b in document.blocks if b.text.startswith("Permission is granted to copy")]
    assert len(licence) == 1 and licence[0].page == 2
    assert "GNU Free Documentation License" in licence[0].text
