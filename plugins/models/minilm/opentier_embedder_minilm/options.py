"""The plugin's options, from ``[plugins.options.minilm]`` in ``opentier.toml``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentier.errors import ConfigError

OPTION_KEYS = ("parallel_runs", "intra_op_threads", "batch_size", "max_batch_tokens", "model_path", "preload")


@dataclass(frozen=True, slots=True)
class MiniLMOptions:
    """Validated options; ``None`` keeps the embedder's default."""

    #: onnxruntime runs (batches) in flight at once, each on its own thread; default: every core.
    parallel_runs: int | None = None
    #: onnxruntime intra-op threads of each run (the calling thread included); default 1.
    intra_op_threads: int | None = None
    #: Most texts per onnxruntime run.
    batch_size: int | None = None
    #: Most padded tokens per onnxruntime run (texts x longest text in the run).
    max_batch_tokens: int | None = None
    #: Another copy of ``model.onnx`` (same sha256 required), for machines that cannot pip-install it.
    model_path: Path | None = None
    #: Load the model during start-up instead of at the first embedding.
    preload: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> MiniLMOptions:
        """Options from a TOML table; an unknown key or a wrong value is a :class:`ConfigError`."""
        unknown = sorted(set(raw) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(
                f"[plugins.options.minilm] has unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(OPTION_KEYS)}"
            )
        model_path = raw.get("model_path")
        if model_path is not None and not isinstance(model_path, str | os.PathLike):
            raise ConfigError(f"[plugins.options.minilm] model_path must be a path, not {model_path!r}")
        preload = raw.get("preload", False)
        if not isinstance(preload, bool):
            raise ConfigError(f"[plugins.options.minilm] preload must be true or false, not {preload!r}")
        return cls(
            parallel_runs=_positive_int(raw, "parallel_runs"),
            intra_op_threads=_positive_int(raw, "intra_op_threads"),
            batch_size=_positive_int(raw, "batch_size"),
            max_batch_tokens=_positive_int(raw, "max_batch_tokens"),
            model_path=Path(model_path).expanduser() if model_path is not None else None,
            preload=preload,
        )


def _positive_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[plugins.options.minilm] {key} must be a whole number >= 1, not {value!r}")
    return value
