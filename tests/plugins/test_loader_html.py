"""The ``html`` loader, loaded through its entry point, on pages written here and pages shipped by others."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentier.components import Block, Document, Loader, Source
from opentier.errors import DocumentLoadError
from opentier.plugin_manager import PluginSelection, load_plugins

# Debian's python3-dev ships the Debian Python Policy as a Sphinx-built page (scripts, navigation, main).
PYTHON_POLICY = Path("/usr/share/doc/python3/python-policy.html")
# Debian's libffi-dev ships libffi's manual as GNU Texinfo HTML.
LIBFFI_CLOSURES = Path("/usr/share/doc/libffi8/html/Closure-Example.html")

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Herons of the coast</title>
  <meta name="Description" content="A field guide
     to herons.">
  <meta name="author" content="Ada">
  <style>body { color: red }</style>
  <script>var tracking = "SECRET-TRACKER";</script>
</head>
<body>
  <header class="site"><a href="/">Bird Club</a> SITE-HEADER</header>
  <nav><ul><li><a href="/a">Home NAV-LINK</a></li></ul></nav>
  <div role="navigation">ROLE-NAV breadcrumbs</div>
  <main>
    <article>
      <header><h1>Herons</h1><p class="byline">by Ada</p></header>
      <p>Herons stand <em>still</em> in
         shallow   water.<br>They strike fast.</p>
      <aside>ASIDE-AD buy binoculars</aside>
      <h2>Where they live</h2>
      <ul>
        <li>Estuaries</li>
        <li>Lakes
          <ul><li>Shallow ones</li></ul>
        </li>
      </ul>
      <ol start="3"><li>Wait</li><li>Strike</li></ol>
      <pre>def strike():
    return "fish"</pre>
      <table>
        <caption>Sizes</caption>
        <tr><th>Bird</th><th>Wingspan</th></tr>
        <tr><td>Heron</td><td>1.8 m</td></tr>
      </table>
      <div>Loose text in a div.<span hidden>HIDDEN-SPAN</span></div>
      <form><input name="q"><button>SEARCH-BUTTON</button></form>
      <h3>Notes<a class="headerlink" href="#notes">¶</a></h3>
      <dl><dt>Plume</dt><dd>Breeding feathers.</dd></dl>
      <noscript>NOSCRIPT-TEXT</noscript>
      <script>document.write("INLINE-SCRIPT")</script>
      <footer>ARTICLE-FOOTER share this</footer>
    </article>
  </main>
  <aside>SIDEBAR-TEXT</aside>
  <footer>SITE-FOOTER © 2024</footer>
</body>
</html>
"""


@pytest.fixture
def loader() -> Loader:
    system = load_plugins(selection=PluginSelection(allow=["html"]))
    assert [info.distribution for info in system.loaded] == ["opentier-loader-html"]
    return system.registry.get_typed(Loader, "html")


async def load_one(loader: Loader, source: Source) -> Document:
    documents = [document async for document in loader.load(source)]
    assert len(documents) == 1
    return documents[0]


async def test_main_content_structure_and_metadata(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "herons.html"
    path.write_text(PAGE, encoding="utf-8")
    document = await load_one(loader, Source(uri="site/herons.html", path=path))

    assert document.title == "Herons of the coast"
    assert document.media_type == "text/html"
    assert document.metadata == {
        "description": "A field guide to herons.",
        "author": "Ada",
        "lang": "en",
        "encoding": "utf-8",
    }
    assert [(b.kind, b.level, b.text) for b in document.blocks] == [
        ("heading", 1, "Herons"),
        ("paragraph", 0, "by Ada"),
        ("paragraph", 0, "Herons stand still in shallow water.\nThey strike fast."),
        ("heading", 2, "Where they live"),
        ("list", 0, "- Estuaries\n- Lakes\n  - Shallow ones"),
        ("list", 0, "3. Wait\n4. Strike"),
        ("code", 0, 'def strike():\n    return "fish"'),
        ("table", 0, "Sizes\nBird | Wingspan\nHeron | 1.8 m"),
        ("paragraph", 0, "Loose text in a div."),
        ("heading", 3, "Notes"),
        ("list", 0, "- Plume\n  Breeding feathers."),
    ]
    for absent in (
        "SECRET-TRACKER", "INLINE-SCRIPT", "color: red", "SITE-HEADER", "NAV-LINK", "ROLE-NAV", "ASIDE-AD",
        "SIDEBAR-TEXT", "SITE-FOOTER", "ARTICLE-FOOTER", "HIDDEN-SPAN", "SEARCH-BUTTON", "NOSCRIPT-TEXT", "¶",
    ):  # fmt: skip
        assert absent not in document.text, absent


async def test_without_main_the_body_is_read_and_page_chrome_dropped(loader: Loader) -> None:
    page = b"""<html><body><header>TOP-BANNER</header><div class="content">
        <h2>Only section</h2><p>First.</p><p>Second.</p></div><footer>BOTTOM</footer></body></html>"""
    document = await load_one(loader, Source(uri="https://example.org/docs/page?x=1", data=page))
    assert document.blocks == [Block("Only section", "heading", level=2), Block("First."), Block("Second.")]
    assert document.title == "page"  # no <title>, no h1: the URL's last path segment


async def test_title_falls_back_to_first_h1(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="a.html", data=b"<h1>The  Title</h1><p>x</p>"))
    assert document.title == "The Title"


async def test_broken_markup_still_gives_text(loader: Loader) -> None:
    page = b"<html><body><div><p>One <b>bold <i>and</b> italic</i><p>Two</div></span></td><li>Stray item"
    document = await load_one(loader, Source(uri="broken.html", data=page))
    assert "One bold and italic" in document.text
    assert "Two" in document.text and "Stray item" in document.text


@pytest.mark.parametrize(
    ("raw", "media_type", "expected", "encoding"),
    [
        # declared in a <meta charset>
        ('<meta charset="windows-1252"><p>Café — 5 €</p>'.encode("cp1252"), None, "Café — 5 €", "cp1252"),
        # "iso-8859-1" is read as windows-1252, like browsers do (0x80 is the euro sign)
        ('<meta charset="iso-8859-1"><p>Prix : 5 €</p>'.encode("cp1252"), None, "Prix : 5 €", "cp1252"),
        # declared through http-equiv
        (
            '<meta http-equiv="Content-Type" content="text/html; charset=koi8-r"><p>Привет, мир</p>'.encode(
                "koi8-r"
            ),
            None,
            "Привет, мир",
            "koi8-r",
        ),
        # the transport's charset (the source's media type)
        (
            "<p>Grüße aus Köln</p>".encode("iso8859-15"),
            "text/html; charset=ISO-8859-15",
            "Grüße aus Köln",
            "iso8859-15",
        ),
        # a byte-order mark wins over everything
        ("\ufeff<p>naïve</p>".encode("utf-16-le"), None, "naïve", "utf-16"),
        # declared utf-8 but the bytes are not: detection takes over
        (
            '<meta charset="utf-8"><p>Le garçon a mangé une crème brûlée à la fenêtre du café.</p>'.encode(
                "cp1252"
            ),
            None,
            "Le garçon a mangé une crème brûlée à la fenêtre du café.",
            "cp1252",
        ),
    ],
)
async def test_encodings(
    loader: Loader, raw: bytes, media_type: str | None, expected: str, encoding: str
) -> None:
    document = await load_one(loader, Source(uri="page.html", data=raw, media_type=media_type))
    assert document.text == expected
    assert document.metadata["encoding"] == encoding


def test_accepts_by_media_type_or_extension(loader: Loader) -> None:
    assert loader.accepts(Source(uri="index.HTM"))
    assert loader.accepts(Source(uri="https://example.org/", media_type="text/html; charset=utf-8"))
    assert loader.accepts(Source(uri="x", media_type="application/xhtml+xml"))
    assert not loader.accepts(Source(uri="notes.md"))


async def test_binary_data_is_a_load_error(loader: Loader) -> None:
    with pytest.raises(DocumentLoadError, match=r"page\.html: holds binary data, not HTML"):
        await load_one(loader, Source(uri="page.html", data=b"%PDF-1.7\n\x00\x01\x02binary"))


async def test_deep_nesting_does_not_overflow(loader: Loader) -> None:
    page = "<div>" * 5000 + "<p>deep text</p>" + "</div>" * 5000
    document = await load_one(loader, Source(uri="deep.html", data=page.encode()))
    assert "deep text" in document.text


@pytest.mark.skipif(
    not PYTHON_POLICY.is_file(), reason=f"{PYTHON_POLICY} absent (Debian package python3-dev)"
)
async def test_real_world_sphinx_page(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="python-policy.html", path=PYTHON_POLICY))
    assert document.title is not None and "Debian Python Policy" in document.title
    headings = [(b.level, b.text) for b in document.blocks if b.kind == "heading"]
    assert headings[0] == (1, "Abstract")
    assert (2, "1. Copyright") in headings
    assert any(level == 3 and text.startswith("2.1.") for level, text in headings)
    assert "packaging of Python within the Debian" in document.text
    # Sphinx's "Navigation" bar (role=navigation), its permalink marks and script code are gone.
    assert "Navigation" not in document.text
    assert "¶" not in document.text
    assert "DOCUMENTATION_OPTIONS" not in document.text and "jQuery" not in document.text
    assert any(b.kind == "list" for b in document.blocks)


@pytest.mark.skipif(
    not LIBFFI_CLOSURES.is_file(), reason=f"{LIBFFI_CLOSURES} absent (Debian package libffi-dev)"
)
async def test_real_world_texinfo_page(loader: Loader) -> None:
    document = await load_one(loader, Source(uri="Closure-Example.html", path=LIBFFI_CLOSURES))
    assert document.title is not None and document.title.startswith("Closure Example")
    assert document.metadata["description"].startswith("Closure Example")
    assert Block("2.6 Closure Example", "heading", level=3) in document.blocks
    code = [b.text for b in document.blocks if b.kind == "code"]
    assert any("#include <ffi.h>" in text and "ffi_closure_alloc" in text for text in code)
    assert "Permission is hereby granted" not in document.text  # the licence is an HTML comment
