"""Text handling of the extractive answerer: sentences, terms (stemmed, stop words out), token counts.

Everything here is plain, rule-based and deterministic, so that an answer can be explained by reading
this file: no model, no randomness.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import snowballstemmer  # type: ignore[import-untyped]

# Common English function words, and the words of a question that say nothing about its subject
# ("what does ... mean", "explain ..."): matching them says nothing about relevance.
STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each either else etc ever
    every few for from further had has have having he her here hers herself him himself his how however
    i if in into is it its itself just least less let like may me might more most much must my myself
    neither no nor not now of off often on once only or other ought our ours ourselves out over own per
    rather same shall she should since so some such than that the their theirs them themselves then
    there these they this those through thus to too under until up upon us very via was we were what
    whatever when where whether which while who whom whose why will with within without would yet you
    your yours yourself yourselves answer available currently describe detail details exist existing
    explain give information kind kinds know known please possible presently say show tell question type
    types way ways
    """.split()  # noqa: SIM905
)

#: Words that end in a full stop without ending a sentence ("e.g.", "Fig. 3", "Dr. Smith").
ABBREVIATIONS = frozenset(
    """
    al approx apr aug ca cf co corp dec def dept dr e.g eg eq eqs est etc feb fig figs gen gov i.e ie
    inc jan jr jul jun lt ltd mar mr mrs ms mt no nos nov oct op p pp prof ref refs rev sec sect sep
    sept sr st vol vols vs
    """.split()  # noqa: SIM905
)

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]")
# A candidate sentence end: terminal punctuation, closing quotes or brackets, then white space.
_BOUNDARY = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•‣◦]|\d{1,3}[.)]|[a-z][.)])\s+")
_stemmer = snowballstemmer.stemmer("english")


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of one source, with what scoring needs."""

    text: str
    #: The source's citation number.
    source: int
    #: Position of the sentence in its source (0 = first).
    position: int
    terms: Counter[str]
    #: Terms of the sentence's context (its source's title), which count for it at a lower weight.
    context: Counter[str] = field(default_factory=Counter)

    @property
    def length(self) -> int:
        return sum(self.terms.values())


def fold(text: str) -> str:
    """Lower-case, compatibility-normalised text without accents: "Café" and "cafe" are one word."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) English stem: "stalls", "stalled", "stalling" → "stall"."""
    if word.isdigit():
        return word
    result: str = _stemmer.stemWord(word)
    return result


def terms(text: str) -> list[str]:
    """The content words of ``text``, folded and stemmed, stop words and one-letter words left out."""
    found = []
    for found_word in _WORD.findall(fold(text)):
        word = found_word.replace("\u2019", "'").removesuffix("'s")
        if len(word) < 2 and not word.isdigit():
            continue
        if word in STOP_WORDS:
            continue
        found.append(stem(word))
    return found


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close to what a BPE tokenizer counts for English prose."""
    return len(_TOKEN.findall(text))


def paragraphs(text: str) -> list[str]:
    """Blocks of ``text`` that sentences never cross: blank-line paragraphs and list items.

    Single line breaks inside a paragraph are wrapping (PDF text, hard-wrapped files), so they are joined.
    """
    blocks: list[str] = []
    for part in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        current: list[str] = []
        for line in part.split("\n"):
            if _LIST_ITEM.match(line) and current:
                blocks.append(" ".join(current))
                current = []
            if line.strip():
                current.append(line.strip())
        if current:
            blocks.append(" ".join(current))
    return [" ".join(block.split()) for block in blocks if block.strip()]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order, each with its own punctuation.

    A full stop ends a sentence unless it follows a known abbreviation or an initial ("J. Smith"), and
    the next sentence may start in lower case (some collections, Cranfield among them, are lower-cased).
    """
    sentences: list[str] = []
    for block in paragraphs(text):
        start = 0
        for match in _BOUNDARY.finditer(block):
            before = block[start : match.start()].rsplit(None, 1)
            last_word = before[-1].lower().rstrip(".") if before else ""
            punctuation = match.group().strip()
            if punctuation.startswith(".") and (
                last_word in ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())
            ):
                continue
            sentences.append(block[start : match.end()].strip())
            start = match.end()
        rest = block[start:].strip()
        if rest:
            sentences.append(rest)
    return sentences


def sentences_of(text: str, source: int, title: str | None = None) -> list[Sentence]:
    """The sentences of one source with their terms, and its title's terms as their context."""
    context = Counter(terms(title)) if title else Counter()
    return [
        Sentence(
            text=sentence, source=source, position=position, terms=Counter(terms(sentence)), context=context
        )
        for position, sentence in enumerate(split_sentences(text))
    ]
