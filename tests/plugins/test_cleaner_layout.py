"""The layout cleaners (headers-footers, dehyphenate), loaded through their entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from opentier.components import Block, Cleaner, Document, Loader, Source
from opentier.config import Settings
from opentier.errors import ConfigError
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins


def started(options: dict[str, object] | None = None) -> PluginSystem:
    """The plugin loaded and started as a host does it, with ``[plugins.options.layout-cleaners]``."""
    system = load_plugins(selection=PluginSelection(allow=["layout-cleaners"]))
    settings = Settings(plugins={"options": {"layout-cleaners": options or {}}})  # type: ignore[arg-type]
    system.pm.hook.opentier_startup(settings=settings)
    return system


@pytest.fixture(scope="module")
def layout() -> PluginSystem:
    return started()


async def run(cleaner: Cleaner, document: Document) -> Document:
    result = await cleaner.clean(document)
    assert isinstance(result, Document), result
    return result


def paginated(*pages: str, source: str = "report.pdf") -> Document:
    """A document as a PDF loader makes it: each page's paragraphs (split at blank lines) as blocks."""
    blocks = [
        Block(part, page=number)
        for number, text in enumerate(pages, start=1)
        for part in text.split("\n\n")
        if part.strip()
    ]
    return Document(blocks=blocks, source=source, media_type="application/pdf")


def texts(document: Document) -> list[tuple[int | None, str]]:
    return [(block.page, block.text) for block in document.blocks]


def test_the_plugin_registers_its_cleaners(layout: PluginSystem) -> None:
    names = {name for _kind, name in layout.components_of("layout-cleaners")}
    assert names == {"headers-footers", "dehyphenate"}
    assert not layout.failures


# --- headers-footers --------------------------------------------------------------------------


def annual_report() -> Document:
    """Five pages: a running header on pages 2-5 (not on the title page), two footer lines on all."""
    header, footer = "ACME Corporation    Annual report 2024", "Confidential"
    return paginated(
        "ACME Corporation\nAnnual report 2024\n\n"
        f"Letter from the chair\nRevenue grew by 12 percent in 2024.\n\nPage 1 of 5\n{footer}",
        f"{header}\nOperations\nWe opened 3 plants.\n\n"
        f"The second plant opened in May.\nPage 2 of 5\n{footer}",
        f"{header}\nFinance\nCash rose to 4.2 million.\n\nPage 3 of 5\n{footer}",
        f"{header}\nPeople\nWe hired 120 engineers.\n\nPage 4 of 5\n{footer}",
        f"{header}\nOutlook\nWe expect growth in 2025.\n\nPage 5 of 5\n{footer}",
    )


async def test_headers_and_footers_with_page_numbers_are_removed(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    doc = await run(cleaner, annual_report())
    assert texts(doc) == [
        (1, "ACME Corporation\nAnnual report 2024"),
        (1, "Letter from the chair\nRevenue grew by 12 percent in 2024."),
        (2, "Operations\nWe opened 3 plants."),
        (2, "The second plant opened in May."),
        (3, "Finance\nCash rose to 4.2 million."),
        (4, "People\nWe hired 120 engineers."),
        (5, "Outlook\nWe expect growth in 2025."),
    ]
    # 4 headers, 5 page numbers, 5 "Confidential".
    assert doc.metadata["headers_footers_removed"] == 14


BODIES = [
    "Sales rose in the north.",
    "Costs fell in the south.",
    "The west held steady.",
    "Exports doubled overall.",
    "Margins improved again.",
    "Staff turnover was low.",
]


async def test_alternating_headers_and_bare_page_numbers(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    pages = []
    for number, body in enumerate(BODIES, start=1):
        # Odd pages carry the page number on the right, even pages on the left.
        header = f"Annual report 2024    {number}" if number % 2 else f"{number}    Annual report 2024"
        pages.append(f"{header}\n{body}\n\n- {number} -")
    doc = await run(cleaner, paginated(*pages))
    assert [text for _page, text in texts(doc)] == BODIES
    assert doc.metadata["headers_footers_removed"] == 12


async def test_roman_page_numbers_and_lines_repeated_mid_page(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    bodies = [
        "\n".join(
            [
                *(f"{w} {word} text." for w in words[:3]),
                "See the appendix.",
                *(f"{w} {word} end." for w in words[3:]),
            ]
        )
        for word in ["red", "green", "blue", "amber"]
    ]
    pages = [
        f"Preface\n{body}\n{roman}" for body, roman in zip(bodies, ["i", "ii", "iii", "IV"], strict=True)
    ]
    doc = await run(cleaner, paginated(*pages))
    # "Preface" (top of every page) and the numerals go; "See the appendix." is mid-page and stays.
    assert [text for _page, text in texts(doc)] == bodies


async def test_rows_of_figures_and_tables_are_not_headers(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    blocks = []
    for page, body in enumerate(BODIES[:4], start=1):
        blocks.append(Block(f"{body}\n{page},250  {page}0,500", page=page))
        blocks.append(Block(f"2024-03-0{page} 12:00:00 INFO page {page} done", page=page))
        blocks.append(Block("Region\tSales\nNorth\t10", kind="table", page=page))
    doc = await run(cleaner, Document(blocks=blocks, source="figures.pdf"))
    assert [block.text for block in doc.blocks] == [block.text for block in blocks]
    assert doc.metadata["headers_footers_removed"] == 0


async def test_documents_without_pages_or_with_few_pages_are_left_alone(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    plain = Document.from_text("Header\nText one\n\nHeader\nText two\n\nHeader\nText three", source="a.txt")
    before = plain.text
    plain = await run(cleaner, plain)
    assert plain.text == before and "headers_footers_removed" not in plain.metadata
    short = await run(cleaner, paginated("Header\nOne\nPage 1", "Header\nTwo\nPage 2"))
    assert [text for _page, text in texts(short)] == ["Header\nOne\nPage 1", "Header\nTwo\nPage 2"]
    assert short.metadata["headers_footers_removed"] == 0


async def test_a_document_made_only_of_repeated_lines_is_kept_whole(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    doc = await run(cleaner, paginated(*(f"Page {n} has a photograph of noise." for n in range(1, 6))))
    assert [text for _page, text in texts(doc)] == [
        f"Page {n} has a photograph of noise." for n in range(1, 6)
    ]
    assert doc.metadata["headers_footers_removed"] == 0


#: A short book: (chapter, body) per page after two front-matter pages.
BOOK = [
    ("Introduction", "Why this tool exists."),
    ("Introduction", "Who should read on."),
    ("Usage", "Install it with pip."),
    ("Usage", "Run it on a folder."),
    ("Usage", "Read the report."),
    ("Reference", "Every option, one by one."),
    ("Reference", "Exit codes and their meaning."),
    ("Reference", "Environment variables."),
]


async def test_running_titles_ending_with_the_printed_page_number(layout: PluginSystem) -> None:
    # Texinfo: "Chapter 2: Usage 4" on top of each page; the printed number is the physical page
    # minus 2 (two front-matter pages), and a chapter title recurs only on that chapter's pages.
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    numbers = {"Introduction": 1, "Usage": 2, "Reference": 3}
    pages = ["User manual\nVersion 1.0", "Contents\n1 Introduction . . . 1\n2 Usage . . . 3"]
    for printed, (chapter, body) in enumerate(BOOK, start=1):
        top = "1 Introduction" if printed == 1 else f"Chapter {numbers[chapter]}: {chapter} {printed}"
        pages.append(f"{top}\n{body}")
    doc = await run(cleaner, paginated(*pages))
    assert (
        [text for _page, text in texts(doc)]
        == [
            "User manual\nVersion 1.0",
            "Contents\n1 Introduction . . . 1\n2 Usage . . . 3",
            f"1 Introduction\n{BOOK[0][1]}",  # a chapter's title, not a running header
            *(body for _chapter, body in BOOK[1:]),
        ]
    )


async def test_running_titles_of_chapters_with_numbers_at_the_bottom(layout: PluginSystem) -> None:
    # DocBook: the chapter's name on top of each of its pages (each chapter under half of the
    # book), the page number alone at the bottom.
    cleaner = layout.registry.get_typed(Cleaner, "headers-footers")
    pages = [f"{chapter} guide\n{body}\n{n}" for n, (chapter, body) in enumerate(BOOK, start=1)]
    doc = await run(cleaner, paginated(*pages))
    # "Introduction guide" heads only two pages: too few to tell it from text.
    assert [text for _page, text in texts(doc)] == [
        f"Introduction guide\n{BOOK[0][1]}",
        f"Introduction guide\n{BOOK[1][1]}",
        *(body for _chapter, body in BOOK[2:]),
    ]


async def test_header_options_are_read_at_startup() -> None:
    cleaner = started({"header_min_pages": 2}).registry.get_typed(Cleaner, "headers-footers")
    doc = await run(cleaner, paginated("Header\nOne\nPage 1", "Header\nTwo\nPage 2"))
    assert [text for _page, text in texts(doc)] == ["One", "Two"]


# --- dehyphenate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the infor-\nmation age", "the information age"),
        ("a pro-\ncess that re-\nturns", "a process that returns"),
        ("a well-\nknown fact", "a well-known fact"),
        ("a self-\naware system", "a self-aware system"),
        ("state-of-the-\nart tools", "state-of-the-art tools"),
        ("send an e-\nmail now", "send an e-mail now"),
        ("the Franco-\nPrussian war", "the Franco-Prussian war"),
        ("after COVID-\n19 began", "after COVID-19 began"),
        ("hy\u00ad\nphen and co\u00adoperate", "hyphen and cooperate"),
        ("the range 10 -\n20 and a dash -\nthen more", "the range 10 - 20 and a dash - then more"),
        ("The quick brown\nfox jumps over\nthe lazy dog.", "The quick brown fox jumps over the lazy dog."),
        (
            "Steps:\n1. Open the lid\n2. Pour\n- stir well\n• serve",
            "Steps:\n1. Open the lid\n2. Pour\n- stir well\n• serve",
        ),
    ],
)
async def test_dehyphenate_paragraphs(layout: PluginSystem, text: str, expected: str) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "dehyphenate")
    doc = await run(cleaner, Document(blocks=[Block(text)], source="x.pdf"))
    assert doc.text == expected


async def test_the_document_decides_between_joined_and_hyphenated(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "dehyphenate")
    doc = Document(
        blocks=[
            Block("We use cross-validation and preprocessing throughout."),
            Block("Results of cross-\nvalidation after pre-\nprocessing, and non-\nlinear ones."),
        ],
        source="x.pdf",
    )
    doc = await run(cleaner, doc)
    assert doc.blocks[1].text == "Results of cross-validation after preprocessing, and nonlinear ones."


async def test_dehyphenate_respects_block_kinds(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "dehyphenate")
    doc = Document(
        blocks=[
            Block("Results of the\nsurvey", kind="heading", level=2),
            Block("first item about infor-\nmation\nsecond item", kind="list"),
            Block("x = a -\n    b\nprint(x)", kind="code"),
            Block("a-\nb\tc", kind="table"),
        ],
        source="x.pdf",
    )
    doc = await run(cleaner, doc)
    assert [block.text for block in doc.blocks] == [
        "Results of the survey",
        "first item about information\nsecond item",
        "x = a -\n    b\nprint(x)",
        "a-\nb\tc",
    ]


async def test_a_paragraph_cut_by_a_page_break_is_one_block_again(layout: PluginSystem) -> None:
    cleaner = layout.registry.get_typed(Cleaner, "dehyphenate")
    doc = paginated(
        "Intro.\n\nThe company con-",
        "tinued to grow, and\nits staff",
        "doubled. A new\n\nsection starts here.\n\nAnother paragraph ends the page",
        "Sentence on a new page.",
    )
    doc = await run(cleaner, doc)
    assert texts(doc) == [
        (1, "Intro."),
        (1, "The company continued to grow, and its staff doubled. A new"),
        (3, "section starts here."),
        (3, "Another paragraph ends the page"),
        (4, "Sentence on a new page."),
    ]


async def test_join_lines_can_be_turned_off() -> None:
    cleaner = started({"join_lines": False}).registry.get_typed(Cleaner, "dehyphenate")
    doc = await run(cleaner, Document(blocks=[Block("An infor-\nmation line\nand another")], source="x"))
    assert doc.text == "An information line\nand another"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"header_lines": 0}, "header_lines must be a whole number >= 1, not 0"),
        ({"header_min_fraction": 1.5}, "header_min_fraction must be a number above 0 and at most 1"),
        ({"header_min_pages": 1}, "header_min_pages must be a whole number >= 2, not 1"),
        ({"join_lines": "yes"}, "join_lines must be true or false, not 'yes'"),
        ({"window": 3}, "unknown option(s) window; known: header_lines, header_min_fraction"),
    ],
)
def test_bad_options_stop_startup(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        started(options)
    assert message in str(caught.value)


LIBTASN1_MANUAL = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")


@pytest.mark.skipif(not LIBTASN1_MANUAL.is_file(), reason=f"{LIBTASN1_MANUAL} absent (Debian libtasn1-doc)")
async def test_a_real_texinfo_manual() -> None:
    # A PDF no one on the team wrote, read by the real PDF loader: every content page starts with a
    # running title such as "Chapter 4: Function reference 9" (the printed page number, 3 less than
    # the physical one).
    system = load_plugins(selection=PluginSelection(allow=["pdf", "basic-cleaners", "layout-cleaners"]))
    if "pdf" not in {plugin.name for plugin in system.loaded}:
        pytest.skip("the pdf loader plugin is not installed")
    system.pm.hook.opentier_startup(settings=Settings())
    loader = system.registry.get_typed(Loader, "pdf")
    [doc] = [doc async for doc in loader.load(Source(uri="libtasn1.pdf", path=LIBTASN1_MANUAL))]
    before = [line for block in doc.blocks for line in block.text.split("\n")]
    running = re.compile(r"(Chapter \d+|Appendix A): [A-Za-z .0-9]+ \d+")
    assert sum(1 for line in before if running.fullmatch(line)) >= 25
    for name in ["mojibake", "unicode", "whitespace", "headers-footers", "dehyphenate"]:
        result = await system.registry.get_typed(Cleaner, name).clean(doc)
        assert isinstance(result, Document)
        doc = result
    assert doc.metadata["headers_footers_removed"] >= 30
    assert not [block.text for block in doc.blocks if running.match(block.text)]
    assert "1 Introduction" in [block.text for block in doc.blocks]
    assert "This document describes the Libtasn1 library that provides Abstract Syntax Notation" in doc.text
