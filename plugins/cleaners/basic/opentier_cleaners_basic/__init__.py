"""Small cleaners every pipeline wants: mojibake repair, Unicode, whitespace, a minimum length.

Options (``[plugins.options.basic-cleaners]``): ``min_chars`` for ``min-length``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from opentier import hookimpl
from opentier.components import Cleaner
from opentier.config import Settings
from opentier.errors import ConfigError
from opentier_cleaners_basic.length import MinLengthCleaner
from opentier_cleaners_basic.mojibake import MojibakeCleaner, repair_mojibake
from opentier_cleaners_basic.unicode import UnicodeCleaner, normalise_unicode
from opentier_cleaners_basic.whitespace import WhitespaceCleaner, normalise_whitespace

__all__ = [
    "MinLengthCleaner",
    "MojibakeCleaner",
    "UnicodeCleaner",
    "WhitespaceCleaner",
    "normalise_unicode",
    "normalise_whitespace",
    "repair_mojibake",
]

#: Entry-point name: the key of this plugin's options in ``settings.plugins.options``.
PLUGIN_NAME = "basic-cleaners"
KNOWN_OPTIONS = frozenset({"min_chars"})

# pluggy registers this module, so the hooks are module functions. A host registers its components
# and then starts: start-up configures the cleaners made here since the previous start-up (weakly
# held, so those of a discarded plugin system do not linger).
_awaiting_startup: weakref.WeakSet[MinLengthCleaner] = weakref.WeakSet()


@hookimpl
def register_cleaners(register: Callable[[Cleaner], None]) -> None:
    min_length = MinLengthCleaner()
    _awaiting_startup.add(min_length)
    register(MojibakeCleaner())
    register(UnicodeCleaner())
    register(WhitespaceCleaner())
    register(min_length)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = settings.plugins.options.get(PLUGIN_NAME, {})
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise ConfigError(
            f"plugins.options.{PLUGIN_NAME}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_OPTIONS))}"
        )
    cleaners = list(_awaiting_startup)
    _awaiting_startup.clear()
    for cleaner in cleaners:
        cleaner.configure(options)
