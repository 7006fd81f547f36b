"""The offline default embedder: all-MiniLM-L6-v2 (384 dimensions) on onnxruntime, without torch.

Registers the embedder ``minilm``; options come from ``[plugins.options.minilm]`` (see the README).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentier import hookimpl
from opentier.components import Embedder
from opentier_embedder_minilm.embedder import MiniLMEmbedder
from opentier_embedder_minilm.options import MiniLMOptions

if TYPE_CHECKING:
    from opentier.config import Settings

__all__ = ["MiniLMEmbedder", "MiniLMOptions"]

#: Entry-point name, and the key of this plugin's options.
PLUGIN_NAME = "minilm"

# pluggy registers this module, so the hooks are module functions. A host registers its components
# and then starts: start-up configures the embedders made here since the previous start-up (weakly
# held, so those of a discarded plugin system do not linger).
_awaiting_startup: weakref.WeakSet[MiniLMEmbedder] = weakref.WeakSet()


@hookimpl
def register_embedders(register: Callable[[Embedder], None]) -> None:
    embedder = MiniLMEmbedder()
    _awaiting_startup.add(embedder)
    register(embedder)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = MiniLMOptions.parse(settings.plugins.options.get(PLUGIN_NAME, {}))
    embedders = list(_awaiting_startup)
    _awaiting_startup.clear()
    for embedder in embedders:
        embedder.configure(options)
        if options.preload:
            embedder.load()
