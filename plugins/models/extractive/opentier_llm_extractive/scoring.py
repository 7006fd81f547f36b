"""Which sentences answer the question: BM25 over the sources' sentences, then a greedy, diverse pick.

Each sentence of the given sources is a tiny document. A sentence's score is its BM25 score for the
question's terms (inverse document frequency counted over these sentences, so a word every sentence
has weighs little). Sentences are then picked greedily: after each pick the weight of the question
terms it covered is lowered, so the next pick favours a sentence that covers another part of the
question; a sentence that repeats a picked one (overlapping chunks, copied paragraphs) is skipped.

A sentence is read in its document's context: the words of its source's title count for it at half
weight ("The tower is 31 metres tall" in a source titled "Brimley lighthouse" answers "How tall is the
Brimley lighthouse?"), but only a sentence that itself holds a word of the question is ever quoted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opentier_llm_extractive.text import Sentence

#: BM25's usual constants: term-frequency saturation and length normalisation.
K1 = 1.2
B = 0.75
#: What a word of the source's title counts for in each of its sentences.
CONTEXT_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Tuning:
    """How strict the pick is; see ``ExtractiveOptions`` for what each number means to a user."""

    max_sentences: int = 4
    min_coverage: float = 0.2
    relative_floor: float = 0.3
    repeat_decay: float = 0.5
    redundancy: float = 0.6
    min_words: int = 4


@dataclass(frozen=True, slots=True)
class Pick:
    """A chosen sentence, with why: its score when picked and the share of the question it covers."""

    sentence: Sentence
    score: float
    coverage: float


def question_weights(
    question: Sequence[str], earlier: Sequence[str], earlier_weight: float
) -> dict[str, float]:
    """Weight 1 for each term of the question, ``earlier_weight`` for terms only earlier turns used.

    Earlier user turns help a follow-up ("and at what speed?") without letting them outweigh it.
    """
    weights = dict.fromkeys(earlier, earlier_weight) if earlier_weight > 0 else {}
    weights.update(dict.fromkeys(question, 1.0))
    return weights


def inverse_frequencies(sentences: Sequence[Sentence], query: Mapping[str, float]) -> dict[str, float]:
    """BM25's IDF of each query term over the sentences (a term no sentence has gets the highest)."""
    count = len(sentences)
    frequency: Counter[str] = Counter()
    for sentence in sentences:
        frequency.update(term for term in sentence.terms if term in query)
    return {term: math.log(1 + (count - frequency[term] + 0.5) / (frequency[term] + 0.5)) for term in query}


def bm25(sentence: Sentence, weights: Mapping[str, float], idf: Mapping[str, float], average: float) -> float:
    norm = K1 * (1 - B + B * sentence.length / average)
    score = 0.0
    for term, weight in weights.items():
        tf = sentence.terms.get(term, 0) + CONTEXT_WEIGHT * sentence.context.get(term, 0)
        if tf:
            score += weight * idf[term] * tf * (K1 + 1) / (tf + norm)
    return score


def coverage(sentence: Sentence, weights: Mapping[str, float], idf: Mapping[str, float]) -> float:
    """Share of the question's IDF-weighted terms that the sentence contains (0 to 1); a term only its
    title holds counts at :data:`CONTEXT_WEIGHT`."""
    total = sum(weight * idf[term] for term, weight in weights.items())
    if total <= 0:
        return 0.0
    found = 0.0
    for term, weight in weights.items():
        if term in sentence.terms:
            found += weight * idf[term]
        elif term in sentence.context:
            found += CONTEXT_WEIGHT * weight * idf[term]
    return found / total


def repeats(sentence: Sentence, picked: Sequence[Pick], threshold: float) -> bool:
    """Whether the sentence says what a picked one says (word-set Jaccard similarity, or contained)."""
    words = set(sentence.terms)
    for pick in picked:
        other = set(pick.sentence.terms)
        common = len(words & other)
        if common == len(words) or common / len(words | other) >= threshold:
            return True
    return False


def pick_sentences(
    sentences: Sequence[Sentence],
    weights: Mapping[str, float],
    tuning: Tuning,
    budget: int,
    cost: Callable[[Sentence], int],
) -> list[Pick]:
    """The sentences to answer with, best first, within ``budget`` (measured by ``cost``).

    Empty when no sentence covers at least ``min_coverage`` of the question: the caller then says that
    the sources do not answer it.
    """
    usable = [s for s in sentences if s.terms and len(s.text.split()) >= tuning.min_words]
    if not usable or not weights:
        return []
    idf = inverse_frequencies(usable, weights)
    average = sum(s.length for s in usable) / len(usable)
    covered = {id(s): coverage(s, weights, idf) for s in usable}
    # Only a sentence that itself holds a word of the question is worth quoting.
    eligible = sorted(
        (
            s
            for s in usable
            if covered[id(s)] >= tuning.min_coverage and any(term in weights for term in s.terms)
        ),
        key=lambda s: (s.source, s.position),
    )
    if not eligible:
        return []
    first_best = max(bm25(s, weights, idf, average) for s in eligible)
    current = dict(weights)
    picked: list[Pick] = []
    left = budget
    while len(picked) < tuning.max_sentences:
        chosen: tuple[float, Sentence] | None = None
        for sentence in eligible:
            if any(p.sentence is sentence for p in picked) or cost(sentence) > left:
                continue
            if repeats(sentence, picked, tuning.redundancy):
                continue
            score = bm25(sentence, current, idf, average)
            # Ties go to the better-ranked source, then to the earlier sentence: deterministic.
            if chosen is None or score > chosen[0]:
                chosen = (score, sentence)
        if chosen is None or chosen[0] < tuning.relative_floor * first_best or chosen[0] <= 0:
            break
        score, sentence = chosen
        picked.append(Pick(sentence=sentence, score=score, coverage=covered[id(sentence)]))
        left -= cost(sentence)
        for term in sentence.terms.keys() | sentence.context.keys():
            if term in current:
                current[term] *= tuning.repeat_decay
    return picked
