"""Optional PII redaction: e-mail addresses, phone numbers, payment card numbers.

Options (``[plugins.options.pii]``): see :class:`~opentier_cleaners_pii.options.PiiOptions`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from opentier import hookimpl
from opentier.components import Cleaner
from opentier.config import Settings
from opentier_cleaners_pii.cleaner import PLACEHOLDERS, PiiCleaner, redact
from opentier_cleaners_pii.detect import find_cards, find_emails, find_phones, find_pii, luhn_valid
from opentier_cleaners_pii.options import PLUGIN_NAME, PiiOptions

__all__ = [
    "PLACEHOLDERS",
    "PiiCleaner",
    "PiiOptions",
    "find_cards",
    "find_emails",
    "find_phones",
    "find_pii",
    "luhn_valid",
    "redact",
]

# pluggy registers this module, so the hooks are module functions. A host registers its components
# and then starts: start-up configures the cleaners made here since the previous start-up (weakly
# held, so those of a discarded plugin system do not linger).
_awaiting_startup: weakref.WeakSet[PiiCleaner] = weakref.WeakSet()


@hookimpl
def register_cleaners(register: Callable[[Cleaner], None]) -> None:
    cleaner = PiiCleaner()
    _awaiting_startup.add(cleaner)
    register(cleaner)


@hookimpl
def opentier_startup(settings: Settings) -> None:
    options = PiiOptions.from_mapping(settings.plugins.options.get(PLUGIN_NAME, {}))
    cleaners = list(_awaiting_startup)
    _awaiting_startup.clear()
    for cleaner in cleaners:
        cleaner.configure(options)
