"""The plugin contract: every hook a plugin may implement.

Plugins import :data:`opentier.hookimpl` and implement any of these functions in a module named by an
entry point in the group ``opentier``. Registration hooks receive a ``register`` callback and call it once
per component; components are objects whose I/O methods are ``async`` (see :mod:`opentier.components`).
Hooks themselves are synchronous: pluggy cannot await. Every hook here is documented in
``docs/hooks.md``, and a test fails when one is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from opentier.components import LLM, Cleaner, Embedder, Loader, Reranker, Retriever
    from opentier.config import Settings

hookspec = pluggy.HookspecMarker("opentier")


@hookspec
def register_loaders(register: Callable[[Loader], None]) -> None:
    """Register loaders, which turn a source (bytes, file, URL) into documents.

    :param register: call once per :class:`~opentier.components.Loader` instance.
    """


@hookspec
def register_cleaners(register: Callable[[Cleaner], None]) -> None:
    """Register cleaners, which normalise a document's text or drop the document with a reason.

    :param register: call once per :class:`~opentier.components.Cleaner` instance.
    """


@hookspec
def register_embedders(register: Callable[[Embedder], None]) -> None:
    """Register embedders, which turn texts into vectors of a fixed size.

    :param register: call once per :class:`~opentier.components.Embedder` instance.
    """


@hookspec
def register_retrievers(register: Callable[[Retriever], None]) -> None:
    """Register retrievers, which find the chunks that best answer a query.

    :param register: call once per :class:`~opentier.components.Retriever` instance.
    """


@hookspec
def register_rerankers(register: Callable[[Reranker], None]) -> None:
    """Register rerankers, which reorder a retriever's candidates before the top ``k`` are kept.

    :param register: call once per :class:`~opentier.components.Reranker` instance.
    """


@hookspec
def register_llms(register: Callable[[LLM], None]) -> None:
    """Register LLMs, which stream an answer for a prompt.

    :param register: call once per :class:`~opentier.components.LLM` instance.
    """


@hookspec
def opentier_startup(settings: Settings) -> None:
    """Called once when a host starts, after every plugin registered its components.

    :param settings: the effective :class:`~opentier.config.Settings`; read your own section from
        ``settings.plugins.options[<entry point name>]``.
    """


@hookspec
def opentier_shutdown() -> None:
    """Called once when a host stops, so a plugin can release what it holds (files, threads)."""
