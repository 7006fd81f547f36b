"""Finding personal data in text: e-mail addresses, phone numbers, payment card numbers.

Each finder returns ``(start, end)`` spans. Precision matters more than recall here (a redacted
date or order number damages the text for nothing), so every finder refuses look-alikes:

- e-mail: ``local@domain.tld`` with a real-looking domain (labels, a letters-only TLD that is not
  an image extension: "icon@2x.png");
- card: 13-19 digits, contiguous or grouped like a card (4-4-4-4…, 4-6-5, 4-6-4), starting with
  2-6 (the ISO/IEC 7812 industries of payment cards), and Luhn-valid;
- phone: Google's libphonenumber rules (``phonenumbers``) at ``STRICT_GROUPING`` leniency: a
  number valid for its country and grouped the way that country writes it, which rules out dates,
  ISBNs and most identifiers. Numbers in national format are read for the configured regions; a
  national number written as bare digits ("2125550199") is taken for an identifier, not a phone.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate

from phonenumbers import Leniency, PhoneNumberMatcher

from opentier_cleaners_pii.options import Kind

Span = tuple[int, int]

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-](?:[\w.%+'-]*[\w%+-])?@(?:[^\W_](?:[\w-]*[^\W_])?\.)+(?P<tld>[^\W\d_]{2,})(?![\w-])",
)
# "icon@2x.png" is an image at double resolution, not an address: no such top-level domains.
_IMAGE_EXTENSIONS = frozenset({"bmp", "gif", "ico", "jpeg", "jpg", "png", "svg", "tif", "tiff", "webp"})
_CARD = re.compile(r"(?<![\w.,/+-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,/]\d)")
_CARD_GROUPS = frozenset({(4, 6, 5), (4, 6, 4)})
# Seven digits or more with phone punctuation between: anything less is no phone number, and
# most text has none, which spares the (slower) phone matcher.
_PHONE_HINT = re.compile(r"\d(?:[ ().\-/\u00a0]{0,3}\d){6}")
_SEPARATORS = re.compile(r"[ -]")


def find_emails(text: str) -> list[Span]:
    if "@" not in text:
        return []
    return [m.span() for m in _EMAIL.finditer(text) if m["tld"].lower() not in _IMAGE_EXTENSIONS]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of payment card numbers (ISO/IEC 7812-1)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_shaped(candidate: str) -> bool:
    """Digits laid out like a card number: contiguous, or in the groups cards are printed in."""
    separators = set(_SEPARATORS.findall(candidate))
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = tuple(len(group) for group in _SEPARATORS.split(candidate))
    if groups in _CARD_GROUPS:
        return True
    return all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4


def find_cards(text: str) -> tuple[list[Span], list[Span]]:
    """Spans of card numbers, and of everything shaped like one (so no phone is found inside)."""
    cards: list[Span] = []
    shaped: list[Span] = []
    for match in _CARD.finditer(text):
        candidate = match.group()
        if not _card_shaped(candidate):
            continue
        shaped.append(match.span())
        digits = _SEPARATORS.sub("", candidate)
        if digits[0] in "23456" and luhn_valid(digits):
            cards.append(match.span())
    return cards, shaped


def find_phones(text: str, regions: Sequence[str], exclude: Sequence[Span] = ()) -> list[Span]:
    """Phone numbers valid in one of ``regions`` (or written with their country code)."""
    if not _PHONE_HINT.search(text):
        return []
    found: set[Span] = set()
    for region in regions or (None,):
        for match in PhoneNumberMatcher(text, region, leniency=Leniency.STRICT_GROUPING):
            raw = match.raw_string
            international = raw.startswith(("+", "00"))
            if not international and raw.isdigit():
                continue
            found.add((match.start, match.end))
    overlaps = _overlap_test(exclude)
    return [span for span in found if not overlaps(span)]


def _overlap_test(spans: Sequence[Span]) -> Callable[[Span], bool]:
    """A function telling whether a span overlaps one of ``spans``, in O(log n)."""
    ordered = sorted(spans)
    starts = [start for start, _end in ordered]
    reach = list(accumulate((end for _start, end in ordered), max))  # furthest end so far

    def overlaps(span: Span) -> bool:
        before = bisect_left(starts, span[1])  # the spans starting before this one ends
        return before > 0 and reach[before - 1] > span[0]

    return overlaps


def find_pii(text: str, kinds: frozenset[Kind], regions: Sequence[str]) -> list[tuple[int, int, Kind]]:
    """Every span of ``kinds`` in ``text``, in order, none overlapping (the first, then longest, wins)."""
    emails = find_emails(text) if "email" in kinds else []
    cards, card_shaped = find_cards(text) if "card" in kinds or "phone" in kinds else ([], [])
    found: list[tuple[int, int, Kind]] = [(start, end, "email") for start, end in emails]
    if "card" in kinds:
        found.extend((start, end, "card") for start, end in cards)
    if "phone" in kinds:
        # Not inside an e-mail address (even one not redacted) nor a card-shaped number.
        exclude = [*(emails or find_emails(text)), *card_shaped]
        found.extend((start, end, "phone") for start, end in find_phones(text, regions, exclude))
    found.sort(key=lambda item: (item[0], item[0] - item[1]))
    kept: list[tuple[int, int, Kind]] = []
    for item in found:
        if not kept or item[0] >= kept[-1][1]:
            kept.append(item)
    return kept
