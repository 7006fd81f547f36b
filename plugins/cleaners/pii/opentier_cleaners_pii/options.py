"""The plugin's options, ``[plugins.options.pii]``, checked once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, cast, get_args

import phonenumbers

from opentier.errors import ConfigError

PLUGIN_NAME = "pii"

Kind = Literal["email", "phone", "card"]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class PiiOptions:
    #: What to redact.
    kinds: frozenset[Kind] = frozenset(KINDS)
    #: Regions (ISO 3166 codes) whose national formats count as phone numbers; numbers written
    #: with their country code (+44 …, 0044 …) are found whatever this says.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR")
    #: At most this many spans are recorded per document (the counts are always complete).
    max_spans: int = 1000

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PiiOptions:
        """Validated options; an unknown key or a wrong value is a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"plugins.options.{PLUGIN_NAME}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        defaults = cls()
        kinds = raw.get("kinds", sorted(defaults.kinds))
        if not _strings(kinds) or not set(kinds) <= set(KINDS):
            raise _invalid("kinds", f"a list of {', '.join(KINDS)}", kinds)
        regions = raw.get("phone_regions", list(defaults.phone_regions))
        if not _strings(regions) or not {r.upper() for r in regions} <= phonenumbers.SUPPORTED_REGIONS:
            raise _invalid("phone_regions", "a list of ISO 3166 region codes such as US, GB, DE", regions)
        max_spans = raw.get("max_spans", defaults.max_spans)
        if isinstance(max_spans, bool) or not isinstance(max_spans, int) or max_spans < 0:
            raise _invalid("max_spans", "a whole number >= 0", max_spans)
        return cls(
            kinds=frozenset(cast(list[Kind], kinds)),
            phone_regions=tuple(dict.fromkeys(r.upper() for r in regions)),
            max_spans=max_spans,
        )


def _strings(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)


def _invalid(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"plugins.options.{PLUGIN_NAME}.{key} must be {expected}, not {value!r}")
