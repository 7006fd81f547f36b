"""The offline default answerer ``extractive``: the sources' most relevant sentences, with citations.

No network, no model weights. Options come from ``[plugins.options.extractive]`` (see the README).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentier import hookimpl
from opentier.components import LLM
from opentier_llm_extractive.llm import ExtractiveLLM
from opentier_llm_extractive.options import ExtractiveOptions

if TYPE_CHECKING:
    from opentier.config import Settings

__all__ = ["ExtractiveLLM", "ExtractiveOptions"]

#: Entry-point name, and the key of this plugin's options.
PLUGIN_NAME = "extractive"

# pluggy registers this module, so the hooks are module functions: start-up configures the models
# registered since the previous start-up (weakly held, so those of a discarded plugin system go).
_awaiting_startup: weakref.WeakSet[ExtractiveLLM] = weakref.WeakSet()


@hookimpl
def register_llms(register: Callable[[LLM], None]) -> None:
    llm = ExtractiveLLM()
    _awaiting_startup.add(llm)
    register(llm)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = ExtractiveOptions.parse(settings.plugins.options.get(PLUGIN_NAME, {}))
    llms = list(_awaiting_startup)
    _awaiting_startup.clear()
    for llm in llms:
        llm.configure(options)
