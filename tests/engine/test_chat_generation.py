"""A model's stream under the chat's time limits: stalls, cancels, failures and stubborn models."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from opentier.components import LLM, ChatMessage, LLMEvent, LLMRequest, TextDelta
from opentier.engine.chat.generation import Generation, Interrupted, running
from opentier.errors import LLMError, LLMTimeoutError

from .chatting import ScriptedLLM, Step

REQUEST = LLMRequest(messages=[ChatMessage("user", "hi")])


async def test_a_stalled_model_times_out_and_is_cancelled() -> None:
    model = ScriptedLLM()
    model.script = ["first ", 30.0, "never"]
    async with running(Generation(model, REQUEST, close_timeout=1.0)) as generation:
        assert await generation.next(1.0) == TextDelta("first ")
        with pytest.raises(LLMTimeoutError, match=r"sent nothing for 0\.2 seconds"):
            await generation.next(0.2)
    assert model.endings == ["CancelledError"]


async def test_an_interrupt_stops_the_text_even_when_the_model_is_ahead() -> None:
    model = ScriptedLLM()
    model.script = [f"word{i} " for i in range(200)]
    async with running(Generation(model, REQUEST, close_timeout=1.0)) as generation:
        assert await generation.next(1.0) == TextDelta("word0 ")
        await asyncio.sleep(0.05)  # the pump has queued the rest of the answer meanwhile
        generation.interrupt()
        with pytest.raises(Interrupted):
            await generation.next(1.0)


async def test_an_unexpected_exception_becomes_llm_failed_without_its_details() -> None:
    model = ScriptedLLM()
    model.script = ["a ", KeyError("secret internals")]
    async with running(Generation(model, REQUEST, close_timeout=1.0)) as generation:
        await generation.next(1.0)
        with pytest.raises(LLMError) as info:
            await generation.next(1.0)
    assert info.value.code == "llm_failed" and "secret" not in info.value.message


class Stubborn(LLM):
    """Ignores cancellation until released: a broken plugin the chat must not hang on."""

    name = "stubborn"
    context_window = 1000

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        yield TextDelta("x")
        while not self.released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.released.wait()


async def test_a_model_that_ignores_cancellation_is_abandoned_in_bounded_time() -> None:
    model = Stubborn()
    generation = Generation(model, REQUEST, close_timeout=0.2)
    generation.start()
    assert await generation.next(1.0) == TextDelta("x")
    began = time.monotonic()
    await generation.stop()
    assert time.monotonic() - began < 1.0
    model.released.set()  # let the abandoned stream end, so the test leaves no task behind
    await generation.stop()


class Counted(list[Step]):
    """A script that counts how far the model has got in it."""

    taken = 0

    def __iter__(self) -> Iterator[Step]:
        for step in super().__iter__():
            self.taken += 1
            yield step


async def test_a_fast_model_waits_for_a_reader_that_does_not_read() -> None:
    model = ScriptedLLM()
    script = Counted(f"word{i} " for i in range(10_000))
    model.script = script
    async with running(Generation(model, REQUEST, close_timeout=1.0, ahead=8)) as generation:
        assert await generation.next(1.0) == TextDelta("word0 ")
        await asyncio.sleep(0.2)  # the reader is busy elsewhere; an unbounded pump would finish meanwhile
        assert script.taken <= 1 + 8 + 1  # read, queued, and the one waiting at the queue
        words = [await generation.next(1.0) for _ in range(50)]
        assert words == [TextDelta(f"word{i} ") for i in range(1, 51)]
        await asyncio.sleep(0.05)
        assert script.taken <= 51 + 8 + 1
    assert model.endings == ["GeneratorExit"]  # stopped at its yield while it waited for the reader


async def test_a_model_held_back_by_a_full_queue_still_ends_and_reports_usage() -> None:
    model = ScriptedLLM()
    model.script = [f"w{i} " for i in range(100)]
    async with running(Generation(model, REQUEST, close_timeout=1.0, ahead=4)) as generation:
        events = []
        while (event := await generation.next(1.0)) is not None:
            events.append(event)
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta(f"w{i} ") for i in range(100)]
    assert events[-1] == model.usage and model.endings == ["complete"]


async def test_an_interrupt_reaches_a_reader_while_the_queue_is_full() -> None:
    model = ScriptedLLM()
    model.script = [f"w{i} " for i in range(100)]
    async with running(Generation(model, REQUEST, close_timeout=1.0, ahead=2)) as generation:
        await generation.next(1.0)
        await asyncio.sleep(0.05)  # the queue fills and the model waits
        generation.interrupt()
        with pytest.raises(Interrupted):
            await generation.next(1.0)
    assert model.endings == ["GeneratorExit"]
