"""The ``openai-compatible`` LLM: any server speaking the OpenAI chat completions API, streamed.

Options come from ``[plugins.options.openai-compatible]``, the API key (if the server needs one) from
``chat.openai_api_key`` (``OPENTIER_CHAT__OPENAI_API_KEY``, environment only); see the README.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentier import hookimpl
from opentier.components import LLM
from opentier_llm_openai.llm import OpenAICompatibleLLM
from opentier_llm_openai.options import OpenAIOptions

if TYPE_CHECKING:
    from opentier.config import Settings

__all__ = ["OpenAICompatibleLLM", "OpenAIOptions"]

#: Entry-point name, and the key of this plugin's options.
PLUGIN_NAME = "openai-compatible"

# pluggy registers this module, so the hooks are module functions: start-up configures the models
# registered since the previous start-up, shutdown closes those started (weakly held either way).
_awaiting_startup: weakref.WeakSet[OpenAICompatibleLLM] = weakref.WeakSet()
_started: weakref.WeakSet[OpenAICompatibleLLM] = weakref.WeakSet()
_closing: set[asyncio.Task[None]] = set()


@hookimpl
def register_llms(register: Callable[[LLM], None]) -> None:
    llm = OpenAICompatibleLLM()
    _awaiting_startup.add(llm)
    register(llm)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = OpenAIOptions.parse(settings.plugins.options.get(PLUGIN_NAME, {}))
    key = settings.chat.openai_api_key
    api_key = key.get_secret_value() if key is not None else None
    llms = list(_awaiting_startup)
    _awaiting_startup.clear()
    for llm in llms:
        llm.configure(options, api_key)
        _started.add(llm)


@hookimpl
def opentier_shutdown() -> None:
    # The hook is synchronous and runs on the host's event loop: close the HTTP clients there.
    llms = list(_started)
    _started.clear()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop, so no client was made on one
    for llm in llms:
        if not llm.connected:
            continue
        task = loop.create_task(llm.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
