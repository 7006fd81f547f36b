"""The ``fulltext`` retriever: BM25 ranking over PostgreSQL full-text search.

Registers the retriever ``fulltext``; its defaults (``k1``, ``b``) come from
``[plugins.options.fulltext]`` (see the README), a request may override them in its options.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentier import hookimpl
from opentier.components import Retriever
from opentier_retriever_fulltext.bm25 import Parameters
from opentier_retriever_fulltext.options import configured
from opentier_retriever_fulltext.retriever import FulltextRetriever

if TYPE_CHECKING:
    from opentier.config import Settings

__all__ = ["FulltextRetriever", "Parameters"]

#: Entry-point name, and the key of this plugin's options.
PLUGIN_NAME = "fulltext"

# pluggy registers this module, so the hooks are module functions: start-up configures the
# retrievers registered since the previous start-up (weakly held, so a discarded plugin system's
# retrievers do not linger).
_awaiting_startup: weakref.WeakSet[FulltextRetriever] = weakref.WeakSet()


@hookimpl
def register_retrievers(register: Callable[[Retriever], None]) -> None:
    retriever = FulltextRetriever()
    _awaiting_startup.add(retriever)
    register(retriever)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    parameters = configured(settings.plugins.options.get(PLUGIN_NAME, {}))
    retrievers = list(_awaiting_startup)
    _awaiting_startup.clear()
    for retriever in retrievers:
        retriever.parameters = parameters
