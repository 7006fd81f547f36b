"""The ``docx`` loader, through its entry point, on documents made here (python-docx) and by others."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pytest
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn

from opentier.components import Block, Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier.plugin_manager import PluginSelection, load_plugins

# Debian's pandoc-data ships pandoc's reference DOCX, unpacked: every built-in style with sample text.
PANDOC_REFERENCE = Path("/usr/share/pandoc/data/docx")
# python-docx (PyPI) ships the template it starts new documents from, a Word-made DOCX.
PYTHON_DOCX_TEMPLATE = Path(docx.__file__).parent / "templates" / "default.docx"


@pytest.fixture
def loader() -> Loader:
    system = load_plugins(selection=PluginSelection(allow=["docx"]))
    assert [info.distribution for info in system.loaded] == ["opentier-loader-docx"]
    return system.registry.get_typed(Loader, "docx")


async def load_one(loader: Loader, source: Source) -> Document:
    documents = [document async for document in loader.load(source)]
    assert len(documents) == 1
    return documents[0]


def field_guide() -> bytes:
    word = docx.Document()
    word.core_properties.title = "Field guide"
    word.core_properties.author = "Grace Hopper"
    word.core_properties.keywords = "birds, coast"
    word.add_paragraph("Herons and Egrets", style="Title")
    word.add_heading("Birds", level=1)
    word.add_paragraph("Robins   sing\nat dawn.")
    word.add_heading("Wading birds", level=2)
    word.add_paragraph("Heron", style="List Bullet")
    word.add_paragraph("Egret", style="List Bullet")
    word.add_heading("How to fish", level=3)
    word.add_paragraph("Stand still", style="List Number")
    word.add_paragraph("Strike", style="List Number")
    table = word.add_table(rows=3, cols=3)
    for row, values in enumerate(
        [("Bird", "Wingspan", "Note"), ("Heron", "1.8 m", ""), ("Egret", "1.0 m", "")]
    ):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    table.cell(1, 2).text = "tall"
    merged = table.cell(2, 0).merge(table.cell(2, 1))
    merged.text = "Egret, about one metre"
    # A custom style that is a heading only through its outline level (0-based: level 2).
    chapter = word.styles.add_style("Chapter Title", WD_STYLE_TYPE.PARAGRAPH)
    outline = OxmlElement("w:outlineLvl")
    outline.set(qn("w:val"), "1")
    chapter.element.get_or_add_pPr().append(outline)
    word.add_paragraph("Appendix", style="Chapter Title")
    word.add_paragraph("")  # empty paragraphs are skipped
    word.add_paragraph("The end.")
    buffer = io.BytesIO()
    word.save(buffer)
    return buffer.getvalue()


async def test_headings_lists_tables_and_core_properties(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "guide.docx"
    path.write_bytes(field_guide())
    document = await load_one(loader, Source(uri="docs/guide.docx", path=path))

    assert document.title == "Field guide"
    assert document.media_type == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert document.metadata["author"] == "Grace Hopper"
    assert document.metadata["keywords"] == "birds, coast"
    assert "created" in document.metadata
    assert [(b.kind, b.level, b.text) for b in document.blocks] == [
        ("heading", 1, "Herons and Egrets"),
        ("heading", 1, "Birds"),
        ("paragraph", 0, "Robins sing at dawn."),
        ("heading", 2, "Wading birds"),
        ("list", 0, "- Heron\n- Egret"),
        ("heading", 3, "How to fish"),
        ("list", 0, "1. Stand still\n2. Strike"),
        ("table", 0, "Bird | Wingspan | Note\nHeron | 1.8 m | tall\nEgret, about one metre | "),
        ("heading", 2, "Appendix"),
        ("paragraph", 0, "The end."),
    ]


async def test_title_falls_back_to_title_style_then_heading_then_file_name(loader: Loader) -> None:
    word = docx.Document()
    word.core_properties.title = ""
    word.add_paragraph("Styled title", style="Title")
    buffer = io.BytesIO()
    word.save(buffer)
    assert (await load_one(loader, Source(uri="a.docx", data=buffer.getvalue()))).title == "Styled title"

    word = docx.Document()
    word.add_paragraph("Just text.")
    buffer = io.BytesIO()
    word.save(buffer)
    assert (
        await load_one(loader, Source(uri="dir/plain.docx", data=buffer.getvalue()))
    ).title == "plain.docx"


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (field_guide()[:3000], "not a DOCX file, or a damaged or truncated one"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "legacy Word .doc"),
        (b"just some text, not a zip archive", "not a DOCX file"),
        (zipped({"mimetype": b"application/epub+zip"}), "not a Word document"),
        (
            zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<broken"}),
            "not a readable DOCX document",
        ),
    ],
    ids=["truncated", "legacy-doc", "not-zip", "other-zip", "broken-xml"],
)
async def test_bad_input_is_a_clear_load_error(loader: Loader, data: bytes, message: str) -> None:
    with pytest.raises(DocumentLoadError, match=message) as caught:
        await load_one(loader, Source(uri="bad.docx", data=data))
    assert str(caught.value).startswith("bad.docx: ")
    assert caught.value.stage == "load"


async def test_zip_bomb_is_refused_before_parsing(loader: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    import opentier_loader_docx

    monkeypatch.setattr(opentier_loader_docx, "MAX_EXPANDED_BYTES", 1024 * 1024)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"<w:document>" + b" " * (4 * 1024 * 1024))
    with pytest.raises(DocumentLoadError, match="expands to 4 MiB, over the 1 MiB limit"):
        await load_one(loader, Source(uri="bomb.docx", data=buffer.getvalue()))


def test_accepts_by_media_type_or_extension(loader: Loader) -> None:
    assert loader.accepts(Source(uri="Report.DOCX"))
    assert loader.accepts(
        Source(
            uri="upload", media_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        )
    )
    assert not loader.accepts(Source(uri="old.doc"))


def pack_pandoc_reference(path: Path) -> Path:
    """Debian ships the reference document unpacked; packing its files again makes the .docx pandoc uses."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(PANDOC_REFERENCE.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(PANDOC_REFERENCE).as_posix())
    return path


@pytest.mark.skipif(
    not (PANDOC_REFERENCE / "word" / "document.xml").is_file(),
    reason=f"{PANDOC_REFERENCE} absent (Debian package pandoc-data)",
)
async def test_real_world_pandoc_reference_document(loader: Loader, tmp_path: Path) -> None:
    path = pack_pandoc_reference(tmp_path / "reference.docx")
    document = await load_one(loader, Source(uri="reference.docx", path=path))

    assert document.title == "Title"
    assert document.metadata["author"] == "Author"
    headings = [(b.level, b.text) for b in document.blocks if b.kind == "heading"]
    assert headings == [(1, "Title")] + [(level, f"Heading {level}") for level in range(1, 10)]
    assert Block("First Paragraph.") in document.blocks
    assert any(b.kind == "paragraph" and b.text.startswith("Body Text.") for b in document.blocks)
    assert Block("Table | Table\n1 | 2", "table") in document.blocks


@pytest.mark.skipif(not PYTHON_DOCX_TEMPLATE.is_file(), reason="python-docx's default.docx template absent")
async def test_real_world_word_template(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="default.docx", path=PYTHON_DOCX_TEMPLATE))
    assert document.blocks == []  # an empty document, made with Word
    assert document.metadata["author"] == "python-docx"
    assert document.title == "default.docx"
