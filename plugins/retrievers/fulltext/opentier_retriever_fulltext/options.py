"""BM25's ``k1`` and ``b``: defaults from ``[plugins.options.fulltext]``, overridable per request.

A request's options reach every part of a ``hybrid`` search, so keys other than ``k1`` and ``b`` are
left to the retrievers they belong to; in the configuration table an unknown key is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from opentier.errors import ConfigError, InvalidRequestError
from opentier_retriever_fulltext.bm25 import Parameters

OPTION_KEYS = ("k1", "b")
#: Largest k1 accepted: beyond it BM25 is raw term frequency anyway.
MAX_K1 = 100.0


def configured(raw: Mapping[str, Any], table: str = "[plugins.options.fulltext]") -> Parameters:
    """The plugin's defaults from its configuration table; a bad key or value is a ConfigError."""
    unknown = sorted(set(raw) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"{table} has unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_KEYS)}"
        )
    try:
        return _parameters(raw, Parameters())
    except ValueError as err:
        raise ConfigError(f"{table} {err}") from None


def requested(options: Mapping[str, Any], default: Parameters) -> Parameters:
    """``default`` with the request's ``k1`` and ``b``, if it gives them."""
    try:
        return _parameters(options, default)
    except ValueError as err:
        raise InvalidRequestError(f"options.{err}") from None


def _parameters(raw: Mapping[str, Any], default: Parameters) -> Parameters:
    return Parameters(
        k1=_number(raw, "k1", default.k1, 0.0, MAX_K1),
        b=_number(raw, "b", default.b, 0.0, 1.0),
    )


def _number(raw: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)
