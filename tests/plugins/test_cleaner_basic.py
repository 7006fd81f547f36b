"""The basic cleaners (mojibake, unicode, whitespace, min-length), loaded through their entry point."""

from __future__ import annotations

import ftfy.bad_codecs  # noqa: F401  (registers the "sloppy-windows-1252" codec used below)
import pytest

from opentier.components import Block, Cleaner, Document, Dropped
from opentier.config import Settings
from opentier.errors import ConfigError
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins


def started(options: dict[str, object] | None = None) -> PluginSystem:
    """The plugin loaded and started as a host does it, with ``[plugins.options.basic-cleaners]``."""
    system = load_plugins(selection=PluginSelection(allow=["basic-cleaners"]))
    settings = Settings(plugins={"options": {"basic-cleaners": options or {}}})  # type: ignore[arg-type]
    system.pm.hook.opentier_startup(settings=settings)
    return system


@pytest.fixture(scope="module")
def basic() -> PluginSystem:
    return started()


async def run(cleaner: Cleaner, document: Document) -> Document:
    result = await cleaner.clean(document)
    assert isinstance(result, Document), result
    return result


def test_the_plugin_registers_its_cleaners(basic: PluginSystem) -> None:
    names = {name for _kind, name in basic.components_of("basic-cleaners")}
    assert names == {"mojibake", "unicode", "whitespace", "min-length"}
    assert not basic.failures


# --- mojibake ---------------------------------------------------------------------------------

CORRECT_TEXTS = [
    "Café crème, naïve façade — déjà vu à la carte",
    "Grüße aus Köln: Straße, Übermaß, Ölförderung",
    "東京の天気は晴れです。明日は「雨」でしょう，たぶん！",
    "中文文本：数据清洗与检索。한국어 문장도 있습니다.",
    "Thumbs up 👍🏽, a family 👨\u200d👩\u200d👧 and a flag 🇫🇷",
    "“Curly quotes”, ‘single ones’, an ellipsis… and a dash – here",
    "Ελληνικά και русский текст, עברית, العربية",
    "Prices: 5 €, £3, ¥200, 10 °C ± 2, ½ cup, © 2024 ACME™",
    "AT&amp;T in plain text, and <b>tags</b> shown as text",
    "ÀÉÎÕÜ àéîõü ÇÑ çñ ÆØÅ æøå",
]


@pytest.mark.parametrize("text", CORRECT_TEXTS)
async def test_mojibake_leaves_correct_text_alone(basic: PluginSystem, text: str) -> None:
    mojibake = basic.registry.get_typed(Cleaner, "mojibake")
    doc = await run(mojibake, Document.from_text(text, source="ok.txt", title=text[:20]))
    assert doc.text == text
    assert doc.title == text[:20]


@pytest.mark.parametrize(
    "original",
    [
        "Café crème, naïve façade — déjà vu à la carte",
        "Grüße aus Köln: Straße, Übermaß",
        "Le prix est de 5 € – « très cher » pour un café",
    ],
)
async def test_mojibake_repairs_utf8_read_as_cp1252(basic: PluginSystem, original: str) -> None:
    broken = original.encode("utf-8").decode("cp1252")
    assert broken != original
    mojibake = basic.registry.get_typed(Cleaner, "mojibake")
    doc = await run(mojibake, Document.from_text(broken, source="broken.txt", title=broken))
    assert doc.text == original
    assert doc.title == original


@pytest.mark.parametrize(
    "original",
    [
        "東京の天気は晴れです。",
        "Thumbs up 👍 and a smile 😀",
        "Zürich – “Grüezi” – 5 €",
        "Ελληνικά και русский текст",
    ],
)
async def test_mojibake_repairs_the_sloppy_cp1252_of_browsers_and_windows(
    basic: PluginSystem, original: str
) -> None:
    # These bytes include 0x81/0x8D/0x9D, which strict cp1252 leaves undefined; real software
    # (browsers, Windows) turns them into C1 control characters instead.
    broken = original.encode("utf-8").decode("sloppy-windows-1252")
    mojibake = basic.registry.get_typed(Cleaner, "mojibake")
    assert (await run(mojibake, Document.from_text(broken, source="b.txt"))).text == original


async def test_mojibake_repairs_latin1_and_double_encoding(basic: PluginSystem) -> None:
    mojibake = basic.registry.get_typed(Cleaner, "mojibake")
    once = "naïve café".encode().decode("latin-1")
    twice = "naïve café".encode().decode("cp1252").encode().decode("cp1252")
    doc = Document(blocks=[Block(once), Block(twice, kind="heading", level=1)], source="x")
    doc = await run(mojibake, doc)
    assert [block.text for block in doc.blocks] == ["naïve café", "naïve café"]


# --- unicode ----------------------------------------------------------------------------------


async def test_unicode_composes_accents_and_spells_out_ligatures(basic: PluginSystem) -> None:
    unicode = basic.registry.get_typed(Cleaner, "unicode")
    doc = Document.from_text(
        "Cafe\u0301 re\u0301sume\u0301\n\nThe \ufb01nal \ufb02ow, e\ufb00ort, o\ufb03ce", source="x"
    )
    doc.title = "Re\u0301sume\u0301"
    doc = await run(unicode, doc)
    assert doc.text == "Café résumé\n\nThe final flow, effort, office"
    assert doc.title == "Résumé"
    for text in CORRECT_TEXTS:
        assert (await run(unicode, Document.from_text(text, source="x"))).text == text


# --- whitespace -------------------------------------------------------------------------------


async def test_whitespace_keeps_code_indentation_and_emoji_sequences(basic: PluginSystem) -> None:
    whitespace = basic.registry.get_typed(Cleaner, "whitespace")
    doc = Document(
        blocks=[
            Block("  Intro\u00a0 text\x0cnext   page\u2028line  ", kind="paragraph"),
            Block("def f(x):\r\n    if x:   \r\n        return 1\x00\n\n\n    return 2\n", kind="code"),
            Block("a\tb\tc\n1\t2\t3", kind="table"),
            Block("A family 👨\u200d👩\u200d👧 and\u200b a zero-width space", kind="paragraph"),
        ],
        source="x",
        title="  Spaced \n  title\x00 ",
    )
    doc = await run(whitespace, doc)
    assert [block.text for block in doc.blocks] == [
        "Intro text\nnext page\nline",
        "def f(x):\n    if x:\n        return 1\n\n\n    return 2",
        "a\tb\tc\n1\t2\t3",
        "A family 👨\u200d👩\u200d👧 and a zero-width space",
    ]
    assert doc.title == "Spaced title"


# --- min-length -------------------------------------------------------------------------------


async def test_min_length_drops_short_documents(basic: PluginSystem) -> None:
    min_length = basic.registry.get_typed(Cleaner, "min-length")
    verdict = await min_length.clean(Document.from_text("Too   short.\n\nReally.", source="s"))
    assert isinstance(verdict, Dropped)
    assert verdict.reason == "only 16 characters of text; min-length requires 20"
    kept = Document.from_text("Long enough to be worth indexing.", source="l")
    assert await min_length.clean(kept) is kept


async def test_min_length_reads_its_option_at_startup() -> None:
    min_length = started({"min_chars": 5}).registry.get_typed(Cleaner, "min-length")
    doc = Document.from_text("Short.", source="s")
    assert await min_length.clean(doc) is doc
    assert isinstance(await min_length.clean(Document.from_text("Tiny", source="t")), Dropped)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_chars": -1}, "min_chars must be a whole number >= 0, not -1"),
        ({"min_chars": "20"}, "min_chars must be a whole number >= 0, not '20'"),
        ({"min_char": 20}, "unknown option(s) min_char; known: min_chars"),
    ],
)
def test_bad_options_stop_startup(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        started(options)
    assert message in str(caught.value)
