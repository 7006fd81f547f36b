"""Cleaners for what page layout leaves in extracted text: running headers/footers, hyphenated breaks.

Options (``[plugins.options.layout-cleaners]``): see :class:`~opentier_cleaners_layout.options.LayoutOptions`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from opentier import hookimpl
from opentier.components import Cleaner
from opentier.config import Settings
from opentier_cleaners_layout.dehyphenate import DehyphenateCleaner, dehyphenate_blocks
from opentier_cleaners_layout.headers_footers import HeadersFootersCleaner, line_key
from opentier_cleaners_layout.options import PLUGIN_NAME, LayoutOptions

__all__ = ["DehyphenateCleaner", "HeadersFootersCleaner", "LayoutOptions", "dehyphenate_blocks", "line_key"]

# pluggy registers this module, so the hooks are module functions. A host registers its components
# and then starts: start-up configures the cleaners made here since the previous start-up (weakly
# held, so those of a discarded plugin system do not linger).
_awaiting_startup: weakref.WeakSet[HeadersFootersCleaner | DehyphenateCleaner] = weakref.WeakSet()


@hookimpl
def register_cleaners(register: Callable[[Cleaner], None]) -> None:
    for cleaner in (HeadersFootersCleaner(), DehyphenateCleaner()):
        _awaiting_startup.add(cleaner)
        register(cleaner)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = LayoutOptions.from_mapping(settings.plugins.options.get(PLUGIN_NAME, {}))
    cleaners = list(_awaiting_startup)
    _awaiting_startup.clear()
    for cleaner in cleaners:
        cleaner.configure(options)
