"""The ``markdown`` loader, through its entry point, on Markdown written here and shipped by others."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentier.components import Block, Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier.plugin_manager import PluginSelection, load_plugins

# Debian's python3-pip ships pip's own documentation sources (MyST Markdown).
PIP_GETTING_STARTED = Path("/usr/share/doc/python3-pip/html/getting-started.md")

SAMPLE = """\
---
title: Field notes
author: Ada
tags: [birds, coast]
date: 2024-05-01
---
Intro before any heading, with *emphasis* and a [link](https://example.org).

# Herons
Herons stand still
in shallow water.

## Where they live
- Estuaries
- Lakes
  - Shallow ones

1. Wait
2. Strike

| Bird | Wingspan |
|------|----------|
| Heron | 1.8 m |

```python
def strike():
    return "fish"
```

> Patience is a heron's virtue.

Setext heading
--------------

<div class="note"><p>Raw HTML note</p><script>alert(1)</script></div>
"""


@pytest.fixture
def loader() -> Loader:
    system = load_plugins(selection=PluginSelection(allow=["markdown"]))
    assert [info.distribution for info in system.loaded] == ["opentier-loader-markdown"]
    return system.registry.get_typed(Loader, "markdown")


async def load_one(loader: Loader, source: Source) -> Document:
    documents = [document async for document in loader.load(source)]
    assert len(documents) == 1
    return documents[0]


def kinds(blocks: list[Block]) -> list[tuple[str, int, str]]:
    return [(block.kind, block.level, block.text) for block in blocks]


async def test_structure_front_matter_and_title(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text(SAMPLE, encoding="utf-8")
    document = await load_one(loader, Source(uri="notes/notes.md", path=path))

    assert document.title == "Field notes"
    assert document.source == "notes/notes.md"
    assert document.media_type == "text/markdown"
    assert document.metadata == {
        "author": "Ada",
        "tags": ["birds", "coast"],
        "date": "2024-05-01",
        "encoding": "utf-8",
    }
    assert kinds(document.blocks) == [
        ("paragraph", 0, "Intro before any heading, with emphasis and a link."),
        ("heading", 1, "Herons"),
        ("paragraph", 0, "Herons stand still\nin shallow water."),
        ("heading", 2, "Where they live"),
        ("list", 0, "- Estuaries\n- Lakes\n  - Shallow ones"),
        ("list", 0, "1. Wait\n2. Strike"),
        ("table", 0, "Bird | Wingspan\nHeron | 1.8 m"),
        ("code", 0, 'def strike():\n    return "fish"'),
        ("paragraph", 0, "Patience is a heron's virtue."),
        ("heading", 2, "Setext heading"),
        ("paragraph", 0, "Raw HTML note"),
    ]
    assert "title" not in document.metadata
    assert "alert" not in document.text and "---" not in document.text


async def test_title_falls_back_to_first_h1_then_file_name(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="a/b.md", data=b"## Minor\n\n# Major\n\ntext"))
    assert document.title == "Major"
    document = await load_one(loader, Source(uri="a/b.md", data=b"plain text only"))
    assert document.title == "b.md"


@pytest.mark.parametrize(
    ("heading", "body", "encoding"),
    [
        ("Crème brûlée", "La crème est déjà prête, dit l'élève à la façade du café.", "cp1252"),
        ("Der Bär", "Der Bär läuft über die Straße, während die Größe der Äpfel überrascht.", "cp1252"),
        (
            "Самолёт",
            "Грузовой самолёт приземлился в аэропорту поздно вечером, груз передали утром.",
            "cp1251",
        ),
    ],
)
async def test_other_encodings_are_detected(loader: Loader, heading: str, body: str, encoding: str) -> None:
    raw = f"# {heading}\n\n{body}\n".encode(encoding)
    document = await load_one(loader, Source(uri="note.md", data=raw))
    assert document.blocks == [Block(heading, "heading", level=1), Block(body)]


def test_accepts_by_media_type_or_extension(loader: Loader) -> None:
    assert loader.accepts(Source(uri="README.MD"))
    assert loader.accepts(Source(uri="notes.markdown"))
    assert loader.accepts(Source(uri="upload", media_type="text/markdown; charset=utf-8"))
    assert not loader.accepts(Source(uri="page.html", media_type="text/html"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"---\ntitle: [unclosed\n---\nbody", r"front matter is not valid YAML \(line 2"),
        (b"---\n- a\n- b\n---\nbody", "front matter must be a YAML mapping"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data, not Markdown"),
    ],
)
async def test_bad_input_is_a_load_error(loader: Loader, raw: bytes, message: str) -> None:
    with pytest.raises(DocumentLoadError, match=message) as caught:
        await load_one(loader, Source(uri="bad.md", data=raw))
    assert caught.value.stage == "load" and "bad.md" in str(caught.value)


async def test_front_matter_alias_bomb_is_refused(loader: Loader) -> None:
    bomb = "---\na: &a [x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    bomb += "---\nbody\n"
    with pytest.raises(DocumentLoadError, match="more than 10000 values"):
        await load_one(loader, Source(uri="bomb.md", data=bomb.encode()))


async def test_missing_file_is_a_load_error(loader: Loader, tmp_path: Path) -> None:
    with pytest.raises(DocumentLoadError, match="cannot be read"):
        await load_one(loader, Source(uri="gone.md", path=tmp_path / "gone.md"))


@pytest.mark.skipif(
    not PIP_GETTING_STARTED.is_file(), reason=f"{PIP_GETTING_STARTED} absent (Debian package python3-pip)"
)
async def test_real_world_pip_documentation(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="getting-started.md", path=PIP_GETTING_STARTED))
    headings = [(b.level, b.text) for b in document.blocks if b.kind == "heading"]
    assert headings[0] == (1, "Getting Started")
    assert (2, "Ensure you have a working pip") in headings
    assert (3, "Install a package") in headings
    codes = [b.text for b in document.blocks if b.kind == "code"]
    assert any("pip install sampleproject" in code for code in codes)
    assert document.title == "Getting Started"
    assert "```" not in document.text


def _typeshed_readme() -> Path | None:
    try:
        import mypy
    except ImportError:
        return None
    path = Path(mypy.__file__).parent / "typeshed" / "stdlib" / "_typeshed" / "README.md"
    return path if path.is_file() else None


@pytest.mark.skipif(_typeshed_readme() is None, reason="mypy's typeshed README absent (PyPI package mypy)")
async def test_real_world_typeshed_readme(loader: Loader) -> None:
    path = _typeshed_readme()
    assert path is not None
    document = await load_one(loader, Source(uri="README.md", path=path))
    assert document.title == "Utility types for typeshed"
    assert [(b.level, b.text) for b in document.blocks if b.kind == "heading"] == [
        (1, "Utility types for typeshed"),
        (2, "Usage"),
        (2, "API Stability"),
    ]
    assert any(b.kind == "code" and "from _typeshed import" in b.text for b in document.blocks)
