"""The ``claude`` LLM: Anthropic's Claude through the anthropic SDK's streaming Messages API.

Options come from ``[plugins.options.claude]``, the API key from ``chat.anthropic_api_key``
(``OPENTIER_CHAT__ANTHROPIC_API_KEY``, environment only); see the README.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentier import hookimpl
from opentier.components import LLM
from opentier_llm_claude.llm import ClaudeLLM
from opentier_llm_claude.options import ClaudeOptions

if TYPE_CHECKING:
    from opentier.config import Settings

__all__ = ["ClaudeLLM", "ClaudeOptions"]

#: Entry-point name, and the key of this plugin's options.
PLUGIN_NAME = "claude"

# pluggy registers this module, so the hooks are module functions: start-up configures the models
# registered since the previous start-up, shutdown closes those started (weakly held either way, so
# the models of a discarded plugin system go).
_awaiting_startup: weakref.WeakSet[ClaudeLLM] = weakref.WeakSet()
_started: weakref.WeakSet[ClaudeLLM] = weakref.WeakSet()
_closing: set[asyncio.Task[None]] = set()


@hookimpl
def register_llms(register: Callable[[LLM], None]) -> None:
    llm = ClaudeLLM()
    _awaiting_startup.add(llm)
    register(llm)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = ClaudeOptions.parse(settings.plugins.options.get(PLUGIN_NAME, {}))
    key = settings.chat.anthropic_api_key
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
