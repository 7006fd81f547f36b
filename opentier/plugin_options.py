"""Reading a plugin's ``[plugins.options.<name>]`` table with checks, for plugin authors.

Every plugin with options validates the same kinds of values (texts, whole numbers, bounded numbers,
flags, paths, tables) and should refuse an unknown key, so that a misspelt option is an error rather
than silently ignored. :class:`OptionTable` does that once, with messages that name the table, the key
and the offending value::

    table = OptionTable("claude", settings.plugins.options.get("claude", {}), known=("model", "max_tokens"))
    model = table.text("model") or "claude-sonnet-5-5"
    max_tokens = table.whole("max_tokens", minimum=1)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentier.errors import ConfigError


class OptionTable:
    """One plugin's option table; an unknown key is refused at once.

    Each reader returns ``None`` for an absent key (so the caller applies its default) and raises
    :class:`~opentier.errors.ConfigError` for a value of the wrong kind or out of bounds.
    """

    def __init__(self, plugin: str, raw: Mapping[str, Any], known: Sequence[str]) -> None:
        self.where = f"[plugins.options.{plugin}]"
        self.raw = raw
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(
                f"{self.where} has unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )

    def text(self, key: str) -> str | None:
        """A non-empty text, stripped."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "a non-empty text", value)
        return value.strip()

    def whole(self, key: str, *, minimum: int) -> int | None:
        """A whole number (not a boolean) of at least ``minimum``."""
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"a whole number >= {minimum}", value)
        return value

    def number(self, key: str, *, low: float, high: float | None = None) -> float | None:
        """A number from ``low`` to ``high`` (inclusive; no upper bound when ``high`` is None)."""
        value = self.raw.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < low
            or (high is not None and value > high)
        ):
            bounds = f"from {low:g} to {high:g}" if high is not None else f">= {low:g}"
            raise self.error(key, f"a number {bounds}", value)
        return float(value)

    def flag(self, key: str) -> bool | None:
        """``true`` or ``false``."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def path(self, key: str) -> Path | None:
        """A file system path, ``~`` expanded."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str | os.PathLike):
            raise self.error(key, "a path", value)
        return Path(value).expanduser()

    def table(self, key: str) -> dict[str, Any] | None:
        """A nested table (a TOML table, a JSON object)."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "a table", value)
        return dict(value)

    def error(self, key: str, expected: str, value: object) -> ConfigError:
        return ConfigError(f"{self.where} {key} must be {expected}, not {value!r}")
