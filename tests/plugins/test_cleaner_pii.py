"""The ``pii`` cleaner, loaded through its entry point: what it redacts, what it must leave alone."""

from __future__ import annotations

import json

import pytest

from opentier.components import Block, Cleaner, Document
from opentier.config import Settings
from opentier.errors import ConfigError
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins


def started(options: dict[str, object] | None = None) -> PluginSystem:
    """The plugin loaded and started as a host does it, with ``[plugins.options.pii]``."""
    system = load_plugins(selection=PluginSelection(allow=["pii"]))
    settings = Settings(plugins={"options": {"pii": options or {}}})  # type: ignore[arg-type]
    system.pm.hook.opentier_startup(settings=settings)
    return system


@pytest.fixture(scope="module")
def pii() -> Cleaner:
    return started().registry.get_typed(Cleaner, "pii")


async def run(cleaner: Cleaner, document: Document) -> Document:
    result = await cleaner.clean(document)
    assert isinstance(result, Document), result
    return result


async def redacted(cleaner: Cleaner, text: str) -> str:
    return (await run(cleaner, Document(blocks=[Block(text)], source="x"))).text


LETTER = (
    "Dear Ms Doe, thank you for your order of 15.03.2024. Write to jane.doe@example.co.uk or "
    "support+orders@shop.example.com.\n"
    "Call +44 20 7946 0958 (London), (212) 555-0187 (New York), 030 901820 (Berlin) or "
    "01 42 68 53 00 (Paris).\n"
    "Card on file: 4111 1111 1111 1111; the refund goes to 5555-5555-5555-4444 and 3782 822463 10005."
)


async def test_a_letter_is_redacted_and_the_redactions_recorded(pii: Cleaner) -> None:
    doc = Document(
        blocks=[Block("Order confirmation", kind="heading", level=1), Block(LETTER)],
        source="mail/0001.eml",
        title="Order for jane.doe@example.co.uk",
    )
    doc = await run(pii, doc)
    assert doc.title == "Order for [EMAIL]"
    assert doc.blocks[0].text == "Order confirmation"
    assert doc.blocks[1].text == (
        "Dear Ms Doe, thank you for your order of 15.03.2024. Write to [EMAIL] or [EMAIL].\n"
        "Call [PHONE] (London), [PHONE] (New York), [PHONE] (Berlin) or [PHONE] (Paris).\n"
        "Card on file: [CARD]; the refund goes to [CARD] and [CARD]."
    )
    record = doc.metadata["redactions"]
    assert record["counts"] == {"email": 3, "phone": 4, "card": 3}
    assert len(record["spans"]) == 10
    assert record["spans"][0] == {"kind": "email", "block": None, "start": 10, "end": 17}
    for span in record["spans"]:
        text = doc.title if span["block"] is None else doc.blocks[span["block"]].text
        assert text[span["start"] : span["end"]] == f"[{span['kind'].upper()}]"
    # The record never holds a redacted value, not even in part.
    dumped = json.dumps(record)
    for secret in ["jane", "example", "7946", "555", "901820", "4111", "4444", "10005"]:
        assert secret not in dumped


LOOK_ALIKES = [
    "Dates: 2024-03-15, 15.03.2024, 03/15/2024, 12:30-14:00, in 1998 and 2024.",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2, 2nd edition, pp. 123-456.",
    "Order no. 2024-118-0042, order #100234981, invoice 2024/000123, ticket 2125550199.",
    "Luhn-invalid: 4111 1111 1111 1112, 1234 5678 9012 3456, 4000123412341235.",
    "Not a card either: 9780306406157 and tracking 1Z999AA10123456784.",
    "Version 10.2.3.4 at 192.168.100.200, port 8080, build 20240315.1.",
    "Decorators like @hookimpl, images like icon@2x.png, and user@localhost.",
    "Account DE89 3704 0044 0532 0130 00 is an IBAN, not a phone.",
]


@pytest.mark.parametrize("text", LOOK_ALIKES)
async def test_look_alikes_are_left_alone(pii: Cleaner, text: str) -> None:
    assert await redacted(pii, text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail: firstname.o'neil@example.org!", "mail: [EMAIL]!"),
        ("'quoted@example.com' and <angle@example.com>", "'[EMAIL]' and <[EMAIL]>"),
        ("user_1@mail-server.example.travel, next", "[EMAIL], next"),
        ("Call +1 212-555-0199 today", "Call [PHONE] today"),
        ("Call +1.212.555.0199 or +4930901820", "Call [PHONE] or [PHONE]"),
        ("Ruf an: 0049 89 1234567 oder +49 (0)30 901820", "Ruf an: [PHONE] oder [PHONE]"),
        ("Japan office: +81 3-1234-5678.", "Japan office: [PHONE]."),
        ("Pay with 4111111111111111 or 4111-1111-1111-1111", "Pay with [CARD] or [CARD]"),
    ],
)
async def test_formats_that_are_redacted(pii: Cleaner, text: str, expected: str) -> None:
    assert await redacted(pii, text) == expected


async def test_kinds_and_regions_are_options() -> None:
    only_email = started({"kinds": ["email"]}).registry.get_typed(Cleaner, "pii")
    doc = await run(only_email, Document(blocks=[Block(LETTER)], source="x"))
    assert doc.text.count("[EMAIL]") == 2 and "[PHONE]" not in doc.text and "[CARD]" not in doc.text
    assert doc.metadata["redactions"]["counts"] == {"email": 2}

    international_only = started({"phone_regions": [], "kinds": ["phone"]}).registry.get_typed(Cleaner, "pii")
    text = "Call +44 20 7946 0958 or 020 7946 0958."
    assert await redacted(international_only, text) == "Call [PHONE] or 020 7946 0958."

    british = started({"phone_regions": ["gb"]}).registry.get_typed(Cleaner, "pii")
    assert await redacted(british, text) == "Call [PHONE] or [PHONE]."
    assert await redacted(british, "(212) 555-0187") == "(212) 555-0187"


async def test_the_span_list_is_capped_but_counts_are_complete() -> None:
    capped = started({"max_spans": 2}).registry.get_typed(Cleaner, "pii")
    doc = await run(capped, Document(blocks=[Block(LETTER)], source="x"))
    assert doc.metadata["redactions"]["counts"] == {"email": 2, "phone": 4, "card": 3}
    assert len(doc.metadata["redactions"]["spans"]) == 2


async def test_a_document_without_pii_is_unchanged_and_says_so(pii: Cleaner) -> None:
    doc = await run(pii, Document.from_text(LOOK_ALIKES[0], source="x"))
    assert doc.text == LOOK_ALIKES[0]
    assert doc.metadata["redactions"] == {"counts": {"email": 0, "phone": 0, "card": 0}, "spans": []}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kinds": ["email", "ssn"]}, "kinds must be a list of email, phone, card"),
        ({"kinds": "email"}, "kinds must be a list of email, phone, card"),
        ({"phone_regions": ["XX"]}, "phone_regions must be a list of ISO 3166 region codes"),
        ({"max_spans": -1}, "max_spans must be a whole number >= 0, not -1"),
        ({"regions": ["US"]}, "unknown option(s) regions; known: kinds, max_spans, phone_regions"),
    ],
)
def test_bad_options_stop_startup(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        started(options)
    assert message in str(caught.value)
