"""The query syntax: a plain question, plus the web-search operators people type.

Bare words are optional: a chunk needs at least one of them, and BM25 ranks chunks by all of them (a
question's words are never ANDed, so a natural-language question finds what it should). On top:

- ``"a phrase"`` must appear, words in that order (a quoted single word must appear);
- ``-word`` and ``-"a phrase"`` must not appear;
- ``x OR y`` (upper case, between two items) requires at least one of them: ``"wing flutter" OR
  "panel flutter"`` needs one of the phrases.

Words are normalised later by PostgreSQL with the collection's language (stemming, stop words).
"""

from __future__ import annotations

from dataclasses import dataclass

OR = "OR"


@dataclass(frozen=True, slots=True)
class Item:
    text: str
    phrase: bool
    excluded: bool


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """What a query asks for, as texts for PostgreSQL to normalise."""

    #: Texts whose words rank chunks (bare words and phrases, not exclusions), in order.
    ranked: tuple[str, ...]
    #: Each group must match (AND); within a group one text, matched as a phrase, is enough (OR).
    required: tuple[tuple[str, ...], ...]
    #: Texts (matched as phrases) that a chunk must not hold.
    excluded: tuple[str, ...]

    @property
    def constrained(self) -> bool:
        return bool(self.required or self.excluded)


def parse(text: str) -> ParsedQuery:
    """Split ``text`` into ranked words, required groups and exclusions (never fails)."""
    tokens = _tokens(text)
    ranked = tuple(token.text for token in tokens if isinstance(token, Item) and not token.excluded)
    excluded = tuple(token.text for token in tokens if isinstance(token, Item) and token.excluded)
    return ParsedQuery(ranked=ranked, required=_required(tokens), excluded=excluded)


def _tokens(text: str) -> list[Item | str]:
    """Items and ``OR`` markers, in order; empty items are dropped."""
    tokens: list[Item | str] = []
    position, end = 0, len(text)
    while position < end:
        char = text[position]
        if char.isspace():
            position += 1
            continue
        excluded = char == "-" and position + 1 < end and not text[position + 1].isspace()
        if excluded:
            position += 1
        if text[position] == '"':
            close = text.find('"', position + 1)
            close = end if close < 0 else close
            body, position = text[position + 1 : close], close + 1
            if body.strip():
                tokens.append(Item(" ".join(body.split()), phrase=True, excluded=excluded))
            continue
        stop = position
        while stop < end and not text[stop].isspace() and text[stop] != '"':
            stop += 1
        word, position = text[position:stop], stop
        if word == OR and not excluded:
            tokens.append(OR)
        elif word.strip("-"):
            tokens.append(Item(word, phrase=False, excluded=excluded))
    return tokens


def _required(tokens: list[Item | str]) -> tuple[tuple[str, ...], ...]:
    """Groups of included items joined by ``OR``, and lone phrases: what a chunk must match."""
    groups: list[list[Item]] = []
    current: list[Item] = []
    joined = False  # the previous token was OR, and an item came before it
    for token in tokens:
        if token == OR:
            joined = bool(current)
            continue
        assert isinstance(token, Item)
        if token.excluded:
            joined = False  # an exclusion breaks a chain: `a OR -b` is just `a -b`
            continue
        if joined:
            current.append(token)
        else:
            if current:
                groups.append(current)
            current = [token]
        joined = False
    if current:
        groups.append(current)
    return tuple(tuple(item.text for item in group) for group in groups if len(group) > 1 or group[0].phrase)
