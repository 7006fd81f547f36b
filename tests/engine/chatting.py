"""Test LLMs for chat tests: a scripted model that records what it saw and how its stream ended,
and a quoting model that answers from the best source it was given, with a citation.

Both are ordinary components registered through a test plugin (:func:`llm_plugin`), so the host
calls them exactly as it calls an installed LLM plugin.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from types import SimpleNamespace

from opentier import hookimpl
from opentier.components import LLM, LLMEvent, LLMRequest, SourcePassage, TextDelta, Usage

#: A step of a script: text to send, seconds to pause, or an exception to raise.
Step = str | float | BaseException

_WORDS = re.compile(r"\w+")


class ScriptedLLM(LLM):
    """Sends ``script`` (text deltas, pauses, an exception), then ``usage`` unless it is ``None``;
    ``queued`` scripts go first, one per call.

    ``requests`` holds every request it got; ``endings`` how each stream ended: ``complete``,
    ``error``, ``GeneratorExit`` (closed at a ``yield``) or ``CancelledError`` (cancelled while
    waiting), as a real model plugin would observe a cancelled chat.
    """

    def __init__(self, name: str = "scripted", context_window: int = 4096) -> None:
        self.name = name
        self.context_window = context_window
        self.script: list[Step] = ["Hello."]
        #: Scripts for the next calls, one per call, before ``script`` applies again.
        self.queued: list[list[Step]] = []
        self.usage: Usage | None = Usage(input_tokens=11, output_tokens=7)
        self.requests: list[LLMRequest] = []
        self.endings: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(_WORDS.findall(text))

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        script = self.queued.pop(0) if self.queued else self.script
        try:
            for step in script:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, int | float):
                    await asyncio.sleep(step)
                else:
                    yield TextDelta(step)
            if self.usage is not None:
                yield self.usage
        except GeneratorExit:
            self.endings.append("GeneratorExit")
            raise
        except asyncio.CancelledError:
            self.endings.append("CancelledError")
            raise
        except Exception:
            self.endings.append("error")
            raise
        self.endings.append("complete")

    async def wait_ended(self, count: int = 1) -> list[str]:
        """``endings`` once at least ``count`` streams ended (a stream may end after the call)."""
        async with asyncio.timeout(10):
            while len(self.endings) < count:
                await asyncio.sleep(0.01)
        return self.endings


class QuotingLLM(LLM):
    """Answers with the first sentence of the given source sharing most words with the question,
    cited as ``[n]``, one word per delta; says so when it got no source."""

    name = "quoting"
    context_window = 8192

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(_WORDS.findall(text))

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        question = request.messages[-1].content.rsplit("Question:", 1)[-1]
        best = best_source(question, request.sources)
        if best is None:
            answer = "I have no source for this."
        else:
            sentence = re.split(r"(?<=[.!?])\s", best.text.strip(), maxsplit=1)[0]
            answer = f"{sentence} [{best.number}]"
        for word in answer.split(" "):
            await asyncio.sleep(0)
            yield TextDelta(word + " ")
        yield Usage(
            input_tokens=self.count_tokens(request.messages[-1].content), output_tokens=len(answer.split())
        )


def best_source(question: str, sources: Sequence[SourcePassage]) -> SourcePassage | None:
    wanted = {word.lower() for word in _WORDS.findall(question) if len(word) > 3}
    scored = [(len(wanted & {w.lower() for w in _WORDS.findall(s.text)}), -s.number, s) for s in sources]
    if not scored:
        return None
    return max(scored, key=lambda item: (item[0], item[1]))[2]


def llm_plugin(*llms: LLM) -> object:
    @hookimpl
    def register_llms(register: Callable[[LLM], None]) -> None:
        for llm in llms:
            register(llm)

    return SimpleNamespace(register_llms=register_llms)
