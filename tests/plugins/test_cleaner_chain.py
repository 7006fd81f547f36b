"""Every built-in cleaner, in the recommended order, on one messy PDF-like document."""

from __future__ import annotations

import time

import ftfy.bad_codecs  # noqa: F401  (registers the "sloppy-windows-1252" codec used below)
import pytest

from opentier.components import Block, Cleaner, Document
from opentier.config import Settings
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins

#: The recommended chain: repair, normalise, strip the page furniture, rejoin, then redact.
CHAIN = ["mojibake", "unicode", "whitespace", "headers-footers", "dehyphenate", "pii", "min-length"]


@pytest.fixture(scope="module")
def cleaners() -> list[Cleaner]:
    system: PluginSystem = load_plugins(
        selection=PluginSelection(allow=["basic-cleaners", "layout-cleaners", "pii"])
    )
    system.pm.hook.opentier_startup(settings=Settings())
    assert not system.failures
    return [system.registry.get_typed(Cleaner, name) for name in CHAIN]


async def clean(cleaners: list[Cleaner], document: Document) -> Document:
    for cleaner in cleaners:
        result = await cleaner.clean(document)
        assert isinstance(result, Document), f"{cleaner.name}: {result}"
        document = result
    return document


PAGES = [
    "ACME Corp — Annual report 2024\n\nLetter from the chair\n\n"
    "Our café chain grew in every re-\ngion; the ﬁnancial results   show a well-\nknown pattern.\n\n"
    "Page 1 of 4",
    "ACME Corp — Annual report 2024\n\nContact\n\n"
    "Write to investor.relations@acme.example or call +1 212-555-0187. Our\n"
    "warehouse in Köln\x00 handles exports to the\n\nPage 2 of 4",
    "ACME Corp — Annual report 2024\n\n"
    "region; orders such as no. 2024-118-0042 ship within 48 hours.\n\n"
    "Outlook\n\nWe ex-\npect growth.\n\nPage 3 of 4",
    "ACME Corp — Annual report 2024\n\nAppendix\n\nISBN 978-3-16-148410-0\n\nPage 4 of 4",
]


def messy_pdf() -> Document:
    """Four pages as a PDF loader yields them, read as the wrong code page on top."""
    blocks = [
        Block(part.encode("utf-8").decode("sloppy-windows-1252"), page=number)
        for number, page in enumerate(PAGES, start=1)
        for part in page.split("\n\n")
    ]
    return Document(blocks=blocks, source="reports/acme-2024.pdf", media_type="application/pdf")


async def test_the_default_chain_on_a_messy_pdf(cleaners: list[Cleaner]) -> None:
    doc = await clean(cleaners, messy_pdf())
    assert [(block.page, block.text) for block in doc.blocks] == [
        (1, "Letter from the chair"),
        (1, "Our café chain grew in every region; the financial results show a well-known pattern."),
        (2, "Contact"),
        (
            2,
            "Write to [EMAIL] or call [PHONE]. Our warehouse in Köln handles exports to the region; "
            "orders such as no. 2024-118-0042 ship within 48 hours.",
        ),
        (3, "Outlook"),
        (3, "We expect growth."),
        (4, "Appendix"),
        (4, "ISBN 978-3-16-148410-0"),
    ]
    assert doc.metadata["headers_footers_removed"] == 8
    assert doc.metadata["redactions"]["counts"] == {"email": 1, "phone": 1, "card": 0}


def spelled(number: int) -> str:
    """A word per number ("bcd" for 123): page texts that differ in more than their digits."""
    return "".join(chr(ord("a") + int(digit)) for digit in str(number))


async def test_the_chain_keeps_up_with_a_large_document(cleaners: list[Cleaner]) -> None:
    # 400 pages, ~1 MB: a smoke test against accidental quadratic work, not a benchmark.
    pages = [
        f"ACME Corp — Annual report 2024\n\nSection {spelled(n)}\n\n"
        + "".join(
            f"The {spelled(n)} café chain grew in every re-\ngion {spelled(n * 100 + line)}; "
            f"results show a well-\nknown pattern {spelled(n)}.\n"
            for line in range(20)
        )
        + f"\n\nPage {n} of 400"
        for n in range(1, 401)
    ]
    blocks = [
        Block(part, page=number) for number, page in enumerate(pages, start=1) for part in page.split("\n\n")
    ]
    doc = Document(blocks=blocks, source="big.pdf")
    started = time.perf_counter()
    doc = await clean(cleaners, doc)
    elapsed = time.perf_counter() - started
    assert len(doc.blocks) == 800 and doc.metadata["headers_footers_removed"] == 800
    assert doc.blocks[1].text.startswith(
        "The b café chain grew in every region baa; results show a well-known pattern b."
    )
    assert elapsed < 10, f"the chain took {elapsed:.1f} s on {sum(len(p) for p in pages)} characters"
