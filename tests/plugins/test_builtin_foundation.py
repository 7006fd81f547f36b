"""The built-in plugins shipped with the foundation, loaded through their real entry points."""

from __future__ import annotations

import pytest

from opentier.components import Cleaner, Document, Dropped, Loader, Source
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins


@pytest.fixture(scope="module")
def builtins() -> PluginSystem:
    return load_plugins(selection=PluginSelection(allow=["text", "basic-cleaners"]))


async def load_one(loader: Loader, source: Source) -> Document:
    docs = [doc async for doc in loader.load(source)]
    assert len(docs) == 1
    return docs[0]


@pytest.mark.parametrize(
    ("raw", "encoding_hint"),
    [
        ("Café crème, naïve façade".encode(), "utf-8"),
        ("\ufeffCafé crème, naïve façade".encode(), "utf-8-sig"),
        ("Café crème, naïve façade, élève, déjà vu, à la carte".encode("cp1252"), "cp1252"),
        (
            "Грузовой самолёт приземлился в аэропорту поздно вечером. Экипаж сообщил о сильном "
            "боковом ветре, но посадка прошла спокойно, и груз передали получателю утром.".encode("koi8-r"),
            "koi8_r",
        ),
    ],
)
async def test_text_loader_detects_encoding(builtins: PluginSystem, raw: bytes, encoding_hint: str) -> None:
    loader = builtins.registry.get_typed(Loader, "text")
    doc = await load_one(loader, Source(uri="notes/readme.txt", data=raw))
    expected = raw.decode(encoding_hint.replace("_", "-"))
    assert doc.text == expected.lstrip("\ufeff")
    assert doc.title == "readme.txt" and doc.source == "notes/readme.txt"
    assert "\ufffd" not in doc.text


def test_text_loader_accepts_by_media_type_or_extension(builtins: PluginSystem) -> None:
    loader = builtins.registry.get_typed(Loader, "text")
    assert loader.accepts(Source(uri="a.TXT"))
    assert loader.accepts(Source(uri="upload", media_type="text/plain; charset=latin-1"))
    assert not loader.accepts(Source(uri="a.pdf", media_type="application/pdf"))


async def test_cleaner_chain(builtins: PluginSystem) -> None:
    unicode = builtins.registry.get_typed(Cleaner, "unicode")
    whitespace = builtins.registry.get_typed(Cleaner, "whitespace")
    doc = Document.from_text("Cafe\u0301\x00  au\u00a0lait\r\n\r\n\r\n\r\n\tnext\u200b line  ", source="x")
    result = await unicode.clean(doc)
    assert isinstance(result, Document)
    result = await whitespace.clean(result)
    assert isinstance(result, Document)
    assert result.text == "Café au lait\n\nnext line"


async def test_whitespace_cleaner_drops_empty_documents(builtins: PluginSystem) -> None:
    whitespace = builtins.registry.get_typed(Cleaner, "whitespace")
    verdict = await whitespace.clean(Document.from_text(" \n\t\x0c \u200b ", source="blank.txt"))
    assert isinstance(verdict, Dropped) and "no text" in verdict.reason
