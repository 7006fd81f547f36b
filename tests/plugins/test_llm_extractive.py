"""The offline default answerer ``extractive``, loaded through its real entry point.

What a user relies on: the answer quotes the sources' own sentences with the right citation markers,
streams in pieces, covers the parts of the question, never repeats itself, fits ``max_output_tokens``,
says plainly when the sources do not answer, and gives the same answer to the same request. On
Cranfield (when present) it answers most questions from their relevant abstracts and declines most
when given another question's abstracts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from opentier_llm_extractive import ExtractiveLLM, ExtractiveOptions
from opentier_llm_extractive.options import NO_ANSWER, NO_SOURCES
from opentier_llm_extractive.text import count_tokens, split_sentences

from opentier.components import LLM, ChatMessage, LLMEvent, LLMRequest, SourcePassage, TextDelta, Usage
from opentier.config import PluginSettings, Settings
from opentier.engine.datasets import cranfield
from opentier.errors import ConfigError, LLMError
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins

CRANFIELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "cranfield"

LIGHTHOUSES = [
    SourcePassage(
        number=1,
        title="Brimley lighthouse",
        source="lighthouses/brimley.md",
        text="The Brimley lighthouse was built in 1874 on Gull Rock. Its lamp was first lit on 3 May 1875 "
        "by keeper Thomas Orr. The Brimley tower is 31 metres tall and painted red and white.",
    ),
    SourcePassage(
        number=2,
        title="Harbour guide",
        source="guides/harbour.pdf",
        page=4,
        text="Boats leave the harbour at 9 a.m. every day. The Carden lighthouse, on the north pier, is "
        "12 metres tall. Tickets are sold at the kiosk.",
    ),
    SourcePassage(
        number=3,
        title="Gull Rock",
        source="places/gull-rock.md",
        text="Gull Rock is a granite islet two miles off the coast. Seals breed on its southern ledges "
        "in autumn.",
    ),
]


def ask(question: str, sources: list[SourcePassage] = LIGHTHOUSES, **fields: Any) -> LLMRequest:
    return LLMRequest(messages=[ChatMessage("user", question)], sources=sources, **fields)


@pytest.fixture(scope="module")
def system() -> PluginSystem:
    system = load_plugins(selection=PluginSelection(allow=["extractive"]))
    assert not system.failures, system.failures
    system.pm.hook.opentier_startup(settings=Settings())
    return system


@pytest.fixture(scope="module")
def llm(system: PluginSystem) -> LLM:
    return system.registry.get_typed(LLM, "extractive")


async def events(llm: LLM, request: LLMRequest) -> list[LLMEvent]:
    return [event async for event in llm.stream(request)]


async def answer(llm: LLM, request: LLMRequest) -> str:
    return "".join(event.text for event in await events(llm, request) if isinstance(event, TextDelta))


async def test_quotes_the_answering_sentence_with_its_citation(llm: LLM) -> None:
    request = ask("How tall is the Brimley lighthouse?", system="Answer from the sources.")
    streamed = await events(llm, request)
    deltas = [event.text for event in streamed if isinstance(event, TextDelta)]
    text = "".join(deltas)
    assert text.startswith("The Brimley tower is 31 metres tall and painted red and white [1].")
    assert "12 metres" not in text  # the other lighthouse's height is not this one's
    assert len(deltas) > 3 and all(len(delta.split()) <= 3 for delta in deltas)  # streamed in word groups
    assert streamed[-1] == Usage(
        input_tokens=count_tokens("Answer from the sources.") + count_tokens(request.messages[0].content),
        output_tokens=count_tokens(text),
    )
    assert isinstance(llm, ExtractiveLLM) and llm.count_tokens(text) == count_tokens(text)


async def test_every_citation_names_a_given_source_and_every_quote_is_verbatim(llm: LLM) -> None:
    text = await answer(llm, ask("When was the Brimley lighthouse built and when was its lamp first lit?"))
    quoted = re.findall(r"(.+?) \[(\d+)\](\.?)\s*", text)
    assert len(quoted) >= 2
    by_number = {source.number: source.text for source in LIGHTHOUSES}
    for sentence, number, stop in quoted:
        assert (sentence + stop) in by_number[int(number)]
    assert "built in 1874" in text and "3 May 1875" in text  # both parts of the question


async def test_says_plainly_when_the_sources_do_not_answer(llm: LLM) -> None:
    text = await answer(llm, ask("What is the population of Reykjavik?"))
    assert text == NO_ANSWER and "[" not in text
    assert await answer(llm, ask("How tall is the Brimley lighthouse?", sources=[])) == NO_SOURCES


async def test_a_sentence_repeated_by_overlapping_chunks_is_quoted_once(llm: LLM) -> None:
    sentence = "The Brimley tower is 31 metres tall and painted red and white."
    sources = [
        SourcePassage(number=1, text=f"Its lamp was first lit on 3 May 1875. {sentence}"),
        SourcePassage(number=2, text=f"{sentence} The gallery was rebuilt in 1921."),
    ]
    text = await answer(llm, ask("How tall is the Brimley tower and what colour is it?", sources=sources))
    assert text.count("31 metres") == 1 and text.startswith("The Brimley tower is 31 metres tall")


async def test_answer_fits_max_output_tokens(llm: LLM) -> None:
    question = "When was the Brimley lighthouse built, when was its lamp first lit, and how tall is it?"
    full = await answer(llm, ask(question))
    assert count_tokens(full) > 20
    for budget in (20, 12, 5):
        text = await answer(llm, ask(question, max_output_tokens=budget))
        assert 0 < count_tokens(text) <= budget
        assert re.search(r"\[\d\]", text), text  # a cut sentence still says where it comes from


async def test_stop_sequences_end_the_answer(llm: LLM) -> None:
    text = await answer(llm, ask("How tall is the Brimley lighthouse?", stop=["painted"]))
    assert text == "The Brimley tower is 31 metres tall and"


async def test_sources_rendered_into_the_question_are_not_taken_for_the_question(llm: LLM) -> None:
    # As the chat's default source_template and question_template write them.
    rendered = "\n\n".join(f"[{source.number}] {source.title}\n{source.text}" for source in LIGHTHOUSES)
    prompt = (
        f"Sources:\n\n{rendered}\n\nAnswer from the sources above and cite them by number, like [1].\n\n"
        "Question: How tall is the Brimley lighthouse?"
    )
    plain = await answer(llm, ask("How tall is the Brimley lighthouse?"))
    assert await answer(llm, ask(prompt)) == plain
    assert (
        await answer(
            llm,
            ask(prompt.replace("How tall is the Brimley lighthouse", "What is the population of Reykjavik")),
        )
        == NO_ANSWER
    )


async def test_a_follow_up_uses_the_earlier_question(llm: LLM) -> None:
    request = LLMRequest(
        messages=[
            ChatMessage("user", "Tell me about the Brimley lighthouse."),
            ChatMessage("assistant", "It was built in 1874 on Gull Rock [1]."),
            ChatMessage("user", "How tall is it?"),
        ],
        sources=LIGHTHOUSES,
    )
    text = await answer(llm, request)
    assert text.startswith("The Brimley tower is 31 metres tall")


async def test_same_request_same_events(llm: LLM) -> None:
    request = ask("When was the lamp of the Brimley lighthouse first lit?")
    assert await events(llm, request) == await events(llm, request)


async def test_request_options_and_configuration(system: PluginSystem, llm: LLM) -> None:
    question = "When was the Brimley lighthouse built, when was its lamp first lit, and how tall is it?"
    one = await answer(llm, ask(question, options={"max_sentences": 1}))
    assert one.count("[") == 1
    with pytest.raises(LLMError) as caught:
        await answer(llm, ask(question, options={"temperature": 0.5}))
    assert caught.value.code == "llm_request_invalid" and "max_sentences" in caught.value.message
    with pytest.raises(ConfigError, match=r"\[plugins.options.extractive\] min_coverage"):
        ExtractiveOptions.parse({"min_coverage": 2})
    fresh = load_plugins(selection=PluginSelection(allow=["extractive"]))
    options = {"extractive": {"no_answer": "Not in your documents.", "context_window": 4096}}
    fresh.pm.hook.opentier_startup(settings=Settings(plugins=PluginSettings(options=options)))
    configured = fresh.registry.get_typed(LLM, "extractive")
    assert configured.context_window == 4096
    assert await answer(configured, ask("What is the population of Reykjavik?")) == "Not in your documents."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith measured it, e.g. at Fig. 3 of the report. It stalled at 15.5 degrees! Why? No idea.",
            [
                "Dr. Smith measured it, e.g. at Fig. 3 of the report.",
                "It stalled at 15.5 degrees!",
                "Why?",
                "No idea.",
            ],
        ),
        (
            "the flow separates near the leading edge . it was found that the\nlayer reattaches downstream .",
            [
                "the flow separates near the leading edge .",
                "it was found that the layer reattaches downstream .",
            ],
        ),
        ("Steps:\n- open the valve\n- close the door", ["Steps:", "- open the valve", "- close the door"]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ],
)
def test_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.skipif(
    not cranfield.is_cranfield(CRANFIELD), reason=f"the Cranfield collection is not at {CRANFIELD}"
)
def test_cranfield_answers_from_relevant_abstracts_and_declines_others() -> None:
    """Each question with at least two highly relevant abstracts (codes 1-2) is asked twice: with its
    first three such abstracts, then with three abstracts relevant to another question and not judged
    for this one. Measured with the defaults: 0.64 answered, then 0.09 (130 questions)."""
    documents = {document.id: document.text for document in cranfield.documents(CRANFIELD)}
    questions = {query.id: query.text for query in cranfield.queries(CRANFIELD)}
    graded = cranfield.qrels(CRANFIELD)
    high = {q: sorted((d for d, g in docs.items() if g >= 3), key=int) for q, docs in graded.items()}
    asked = sorted((q for q, docs in high.items() if len(docs) >= 2), key=int)
    model = ExtractiveLLM()
    answered = {"relevant": 0, "other": 0}
    for index, question in enumerate(asked):
        other = asked[(index + 37) % len(asked)]
        unrelated = [d for d in high[other] if d not in graded.get(question, {})][:3]
        for kind, ids in (("relevant", high[question][:3]), ("other", unrelated)):
            sources = [SourcePassage(number=n, text=documents[d]) for n, d in enumerate(ids, start=1)]
            text = model.answer(ask(questions[question], sources=sources))
            answered[kind] += text != NO_ANSWER
    assert len(asked) == 130
    assert answered["relevant"] / len(asked) >= 0.6, answered
    assert answered["other"] / len(asked) <= 0.12, answered
