"""The plugin's options, ``[plugins.options.layout-cleaners]``, checked once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from opentier.errors import ConfigError

PLUGIN_NAME = "layout-cleaners"


@dataclass(frozen=True, slots=True)
class LayoutOptions:
    #: headers-footers: how many lines at the top and at the bottom of each page are examined.
    header_lines: int = 3
    #: headers-footers: share of the pages a line must recur on to be a header or footer.
    header_min_fraction: float = 0.5
    #: headers-footers: documents with fewer pages are left alone.
    header_min_pages: int = 3
    #: dehyphenate: also turn line breaks inside paragraphs and headings into spaces.
    join_lines: bool = True

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> LayoutOptions:
        """Validated options; an unknown key or a wrong value is a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"plugins.options.{PLUGIN_NAME}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        defaults = cls()
        return cls(
            header_lines=_whole(raw, "header_lines", defaults.header_lines, minimum=1),
            header_min_fraction=_fraction(raw, "header_min_fraction", defaults.header_min_fraction),
            header_min_pages=_whole(raw, "header_min_pages", defaults.header_min_pages, minimum=2),
            join_lines=_flag(raw, "join_lines", defaults.join_lines),
        )


def _invalid(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"plugins.options.{PLUGIN_NAME}.{key} must be {expected}, not {value!r}")


def _whole(raw: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(key, f"a whole number >= {minimum}", value)
    return value


def _fraction(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise _invalid(key, "a number above 0 and at most 1", value)
    return float(value)


def _flag(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(key, "true or false", value)
    return value
