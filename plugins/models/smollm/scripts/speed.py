"""Tokens per second of ``smollm``: llama.cpp called directly, and through the plugin's stream, same run.

The plugin adds a worker thread, a queue to the event loop and a cancellation check per token; the
ratio shows what that costs. Greedy decoding of one prompt, answers up to 256 tokens, best of 3
rounds, the two alternated in each round.

    .venv/bin/python plugins/models/smollm/scripts/speed.py
"""

from __future__ import annotations

import asyncio
import time

from opentier_llm_smollm import SmolLM, SmolLMOptions

from opentier.components import ChatMessage, LLMRequest, TextDelta, Usage

PROMPT = "Write a long story about a lighthouse keeper and a storm."
MAX_TOKENS = 256
ROUNDS = 3


def direct(llm: SmolLM) -> tuple[float, float, int]:
    """Seconds to the first piece, seconds in all, and tokens, with llama.cpp alone."""
    model = llm.load()
    request = LLMRequest(messages=[ChatMessage("user", PROMPT)], max_output_tokens=MAX_TOKENS)
    prompt, stop = llm._prompt(request)
    model.reset()  # no prompt cache from the previous round
    started = time.perf_counter()
    first = 0.0
    text = []
    for part in model.create_completion(
        prompt, max_tokens=MAX_TOKENS, temperature=0.0, stop=stop, stream=True, repeat_penalty=1.1
    ):
        first = first or time.perf_counter() - started
        text.append(part["choices"][0]["text"])
    return first, time.perf_counter() - started, llm.count_tokens("".join(text))


async def through_plugin(llm: SmolLM) -> tuple[float, float, int]:
    llm.load().reset()
    request = LLMRequest(messages=[ChatMessage("user", PROMPT)], max_output_tokens=MAX_TOKENS)
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            first = first or time.perf_counter() - started
        elif isinstance(event, Usage):
            tokens = event.output_tokens
    return first, time.perf_counter() - started, tokens


def main() -> None:
    llm = SmolLM(SmolLMOptions(context_window=2048))
    llm.load()
    names = ("llama.cpp directly", "smollm plugin stream")
    best: dict[str, tuple[float, float, int]] = {}
    # Alternate the two in every round, so that a change in the machine's load hits both alike.
    for _ in range(ROUNDS):
        for name in names:
            first, total, tokens = direct(llm) if name == names[0] else asyncio.run(through_plugin(llm))
            if name not in best or tokens / total > best[name][2] / best[name][1]:
                best[name] = (first, total, tokens)
    for name in names:
        first, total, tokens = best[name]
        print(
            f"{name:22} first piece {first * 1000:6.1f} ms   "
            f"{tokens} tokens in {total:.2f} s = {tokens / total:6.1f} tokens/s"
        )
    (_, base_total, base_tokens), (_, total, tokens) = best[names[0]], best[names[1]]
    print(f"plugin / direct tokens/s: {(tokens / total) / (base_tokens / base_total):.2f}")


if __name__ == "__main__":
    main()
