"""YAML front matter → JSON-safe metadata (what the ledger can store and filters can compare)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import yaml

from opentier.errors import DocumentLoadError

#: YAML aliases can make a small text expand into a huge tree ("billion laughs"): count what we copy.
MAX_VALUES = 10_000


def parse_front_matter(text: str, uri: str) -> dict[str, Any]:
    """The front matter's mapping, JSON-safe; a clear error when it is not a YAML mapping."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            # +1: the opening '---' line comes before the YAML text.
            where = f" (line {mark.line + 2}, column {mark.column + 1})"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DocumentLoadError(f"{uri}: the front matter is not valid YAML{where}: {problem}") from err
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DocumentLoadError(
            f"{uri}: the front matter must be a YAML mapping (key: value lines), not a {type(value).__name__}"
        )
    budget = [MAX_VALUES]
    return {str(key): _json_safe(item, budget, uri) for key, item in value.items()}


def _json_safe(value: Any, budget: list[int], uri: str) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise DocumentLoadError(f"{uri}: the front matter holds more than {MAX_VALUES} values")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item, budget, uri) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item, budget, uri) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
