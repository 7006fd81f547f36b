"""The prompt of an answer fits the model's window: output reserved, history trimmed oldest first,
sources numbered and budgeted; and the model-free rewrite of a follow-up."""

from __future__ import annotations

import pytest

from opentier.components import ChatMessage, SearchHit
from opentier.config import ChatSettings
from opentier.engine.chat.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt
from opentier.engine.chat.rewrite import key_terms, terms_query
from opentier.errors import InvalidRequestError

from .chatting import ScriptedLLM


def hit(number: int, words: int = 20) -> SearchHit:
    return SearchHit(
        chunk_id=f"chunk-{number}",
        score=1.0 / number,
        document_id=f"doc-{number}",
        collection_id="col",
        text=" ".join(f"w{number}x{i}" for i in range(words)),
        source=f"file{number}.txt",
        title=f"Title {number}",
        page=number,
    )


def history(turns: int) -> list[ChatMessage]:
    messages = []
    for turn in range(turns):
        messages.append(ChatMessage("user", f"question {turn} " + "q " * 20))
        messages.append(ChatMessage("assistant", f"answer {turn} " + "a " * 20))
    return messages


def test_sources_are_numbered_rendered_and_passed_to_the_model() -> None:
    llm = ScriptedLLM(context_window=4096)
    prompt = build_prompt(
        llm, ChatSettings(), "What lifts?", [], [hit(1), hit(2)], max_output_tokens=256, temperature=0.3
    )
    request = prompt.request
    assert request.system == DEFAULT_SYSTEM_PROMPT and request.temperature == 0.3
    assert request.max_output_tokens == 256
    content = request.messages[-1].content
    assert content.startswith(
        "Sources:\n\n<sources "
    )  # fenced as data (tests/engine/test_prompt_injection.py)
    assert "\n[1] Title 1, page 1\nw1x0" in content and "\n\n[2] Title 2, page 2\n" in content
    assert content.endswith("Question: What lifts?")
    assert [(s.number, s.source, s.page) for s in request.sources] == [
        (1, "file1.txt", 1),
        (2, "file2.txt", 2),
    ]
    assert [s.chunk_id for s in prompt.sources] == ["chunk-1", "chunk-2"]
    total = llm.count_tokens(request.system or "") + sum(
        llm.count_tokens(m.content) for m in request.messages
    )
    assert total <= prompt.input_tokens <= llm.context_window - request.max_output_tokens


def test_a_small_window_trims_the_oldest_history_and_the_weakest_sources() -> None:
    llm = ScriptedLLM(context_window=600)
    settings = ChatSettings(history_max_share=0.4)
    prompt = build_prompt(
        llm,
        settings,
        "And now?",
        history(6),
        [hit(n, words=40) for n in range(1, 9)],
        max_output_tokens=1024,
        temperature=0.0,
    )
    request = prompt.request
    kept = request.messages[:-1]
    assert 0 < len(kept) < 12 and kept[0].role == "user"
    assert kept[-1].content.startswith("answer 5")  # the newest history stays
    assert 0 < len(prompt.sources) < 8
    assert [s.number for s in prompt.sources] == list(range(1, len(prompt.sources) + 1))
    assert [s.chunk_id for s in prompt.sources] == [f"chunk-{n}" for n in range(1, len(prompt.sources) + 1)]
    assert request.max_output_tokens < 1024  # half of the room, not more
    assert prompt.input_tokens + request.max_output_tokens <= llm.context_window


def test_the_best_source_is_cut_rather_than_left_out() -> None:
    llm = ScriptedLLM(context_window=400)
    prompt = build_prompt(
        llm, ChatSettings(), "Q?", [], [hit(1, words=500)], max_output_tokens=64, temperature=0.0
    )
    assert len(prompt.sources) == 1
    assert prompt.sources[0].text.endswith(" …") and len(prompt.sources[0].text) < len(hit(1, 500).text)
    assert prompt.input_tokens + prompt.request.max_output_tokens <= llm.context_window


def test_no_sources_found_tells_the_model_and_plain_chat_sends_the_message() -> None:
    llm = ScriptedLLM()
    settings = ChatSettings()
    told = build_prompt(llm, settings, "Who won?", [], [], max_output_tokens=64, temperature=0.0)
    assert told.request.messages[-1].content.startswith("No source in the searched documents")
    plain = build_prompt(llm, settings, "Who won?", [], None, max_output_tokens=64, temperature=0.0)
    assert plain.request.messages[-1].content == "Who won?" and plain.sources == []


def test_a_message_too_long_for_the_window_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="too long for the model"):
        build_prompt(
            ScriptedLLM(context_window=50),
            ChatSettings(),
            "word " * 100,
            [],
            None,
            max_output_tokens=64,
            temperature=0.0,
        )


def test_templates_with_unknown_placeholders_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="source_template"):
        ChatSettings(source_template="[{number}] {txt}")


def test_the_terms_rewrite_carries_the_previous_topic() -> None:
    earlier = [ChatMessage("user", "How do wings make lift?"), ChatMessage("assistant", "By pressure [1].")]
    assert terms_query("And at low speed?", earlier, 6) == "wings lift And at low speed?"
    assert terms_query("What about wings?", earlier, 6) == "lift What about wings?"
    assert terms_query("First question", [], 6) == "First question"
    assert key_terms("the Boeing 747 and the Airbus A380 wings", "", 2) == ["Boeing", "Airbus"]
