"""The ``extractive`` LLM: answers with the sources' own sentences, each followed by its citation."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

from opentier.components import LLM, LLMEvent, LLMRequest, SourcePassage, TextDelta, Usage
from opentier_llm_extractive import text as lexicon
from opentier_llm_extractive.options import ExtractiveOptions
from opentier_llm_extractive.scoring import Pick, Tuning, pick_sentences, question_weights

_TERMINAL = re.compile(r"[.!?…]+$")
_SOURCE_HEADER = re.compile(r"^\s*(?:source\s*)?\[\d+\].*$", re.I | re.M)
_PIECE = re.compile(r"\S+\s*")
_QUESTION_MARKER = re.compile(r"^[ \t]*question[ \t]*:[ \t]*", re.I | re.M)
# Sources longer than this (in characters) are scored in a thread so the event loop stays free.
_THREAD_ABOVE = 200_000


class ExtractiveLLM(LLM):
    """Selects, orders and quotes the sentences of ``request.sources`` that best answer the question.

    It is not a language model: it writes nothing of its own, cannot rephrase, summarise, reason or
    combine facts, and ignores the system prompt and temperature. It never states anything that is not
    in a source, and says so plainly when no sentence is relevant. Same request, same answer.
    """

    name = "extractive"
    description = (
        "Offline answerer: quotes the most relevant sentences of the sources, with citations (no model)."
    )

    def __init__(self, options: ExtractiveOptions | None = None) -> None:
        self.configure(options or ExtractiveOptions())

    def configure(self, options: ExtractiveOptions) -> None:
        self.options = options
        self.context_window = options.context_window

    def count_tokens(self, text: str) -> int:
        return lexicon.count_tokens(text)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        options = self.options.for_request(request.options)
        if sum(len(source.text) for source in request.sources) > _THREAD_ABOVE:
            answer = await asyncio.to_thread(self.answer, request, options)
        else:
            answer = self.answer(request, options)
        pieces = _PIECE.findall(answer)
        for start in range(0, len(pieces), options.words_per_delta):
            yield TextDelta("".join(pieces[start : start + options.words_per_delta]))
            # Let other tasks run between pieces, as a remote model's stream would.
            await asyncio.sleep(0)
        prompt = [request.system or "", *(message.content for message in request.messages)]
        yield Usage(
            input_tokens=sum(self.count_tokens(part) for part in prompt if part),
            output_tokens=self.count_tokens(answer),
        )

    def answer(self, request: LLMRequest, options: ExtractiveOptions | None = None) -> str:
        """The whole answer for ``request``, as :meth:`stream` sends it."""
        options = options or self.options
        if not request.sources:
            return _cut(options.no_sources, request.max_output_tokens, request.stop)
        question, earlier = _question_of(request)
        weights = question_weights(
            lexicon.terms(question),
            [term for turn in earlier for term in lexicon.terms(turn)],
            options.earlier_turns_weight,
        )
        sentences = [
            sentence
            for source in sorted(request.sources, key=lambda s: s.number)
            for sentence in lexicon.sentences_of(source.text, source.number, source.title)
        ]
        tuning = Tuning(max_sentences=options.max_sentences, min_coverage=options.min_coverage)
        budget = request.max_output_tokens
        picks = pick_sentences(sentences, weights, tuning, budget, _cost)
        if not picks:
            # Relevant sentences may exist but each be longer than the whole budget: quote the best cut.
            unbounded = pick_sentences(
                sentences, weights, Tuning(1, options.min_coverage), 1 << 30, lambda _: 0
            )
            if not unbounded:
                return _cut(options.no_answer, budget, request.stop)
            return _cut(_truncated(unbounded[0], budget), budget, request.stop)
        return _cut(
            " ".join(_cited(pick.sentence.text, pick.sentence.source) for pick in picks), None, request.stop
        )


def _question_of(request: LLMRequest) -> tuple[str, list[str]]:
    """The last user turn (without the sources, if the prompt rendered them there) and the earlier ones."""
    turns = [message.content for message in request.messages if message.role == "user"]
    if not turns:
        return "", []
    question = _without_sources(turns[-1], request.sources)
    return question, [_without_sources(turn, request.sources) for turn in turns[:-1]]


def _without_sources(turn: str, sources: Sequence[SourcePassage]) -> str:
    """The question of a user turn into which the prompt may have rendered the sources.

    The sources' texts and their ``[n] ...`` header lines are removed; when a line starts with
    ``Question:`` (as the chat's default ``question_template`` writes it), only what follows the last
    one is the question, so the template's instructions do not count as words of the question.
    """
    stripped = turn
    for source in sources:
        if source.text.strip():
            stripped = stripped.replace(source.text.strip(), " ")
    if stripped != turn:
        stripped = _SOURCE_HEADER.sub(" ", stripped)
    markers = list(_QUESTION_MARKER.finditer(stripped))
    if markers:
        stripped = stripped[markers[-1].end() :]
    return stripped


def _cited(sentence: str, number: int) -> str:
    """The sentence with its marker before its final punctuation: ``... 15 degrees [2].``"""
    end = _TERMINAL.search(sentence)
    if end is None:
        return f"{sentence} [{number}]"
    return f"{sentence[: end.start()].rstrip()} [{number}]{end.group()}"


def _cost(sentence: lexicon.Sentence) -> int:
    """Tokens the sentence takes in the answer, with its marker."""
    return lexicon.count_tokens(_cited(sentence.text, sentence.source))


def _truncated(pick: Pick, budget: int) -> str:
    """The first words of the picked sentence that fit ``budget``, then ``… [n]``."""
    words = pick.sentence.text.split()
    marker = f" [{pick.sentence.source}]"
    kept: list[str] = []
    for word in words:
        if lexicon.count_tokens(" ".join([*kept, word]) + " …" + marker) > budget:
            break
        kept.append(word)
    if not kept:
        return ""
    return " ".join(kept) + " …" + marker


def _cut(answer: str, budget: int | None, stop: Sequence[str]) -> str:
    """``answer`` ended before the first stop sequence, and within ``budget`` words when one is given."""
    for sequence in stop:
        if sequence and sequence in answer:
            answer = answer[: answer.index(sequence)]
    if budget is not None and lexicon.count_tokens(answer) > budget:
        kept: list[str] = []
        for word in answer.split():
            if lexicon.count_tokens(" ".join([*kept, word])) > budget:
                break
            kept.append(word)
        answer = " ".join(kept)
    return answer.rstrip()
