"""The plugin's options, from ``[plugins.options.claude]`` in ``opentier.toml``.

The API key is not an option: it is a secret, read from ``chat.anthropic_api_key`` (environment variable
``OPENTIER_CHAT__ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from opentier.errors import ConfigError

_T = TypeVar("_T")
WHERE = "[plugins.options.claude]"
OPTION_KEYS = (
    "model",
    "max_tokens",
    "timeout_seconds",
    "connect_timeout_seconds",
    "max_retries",
    "base_url",
    "context_window",
)
#: The model used when the configuration names none.
DEFAULT_MODEL = "claude-sonnet-5-5"


@dataclass(frozen=True, slots=True)
class ClaudeOptions:
    """Validated options (defaults shown)."""

    model: str = DEFAULT_MODEL
    #: Upper bound on the answer's tokens; the request's ``max_output_tokens`` applies below it.
    max_tokens: int | None = None
    #: Longest wait for the API: for the response to start, and between two pieces of a stream.
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    #: Retries of a call that failed before streaming began (connection errors, 408, 409, 429, 5xx),
    #: waiting as the API's ``retry-after`` says, else with exponential back-off (the SDK's policy).
    max_retries: int = 2
    #: Another endpoint speaking the same API (a proxy, a gateway); ``None`` is Anthropic's.
    base_url: str | None = None
    #: Tokens of prompt and answer together that the model accepts.
    context_window: int = 200_000

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ClaudeOptions:
        """Options from a TOML table; an unknown key or a wrong value is a :class:`ConfigError`."""
        unknown = sorted(set(raw) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(
                f"{WHERE} has unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_KEYS)}"
            )
        defaults = cls()
        return cls(
            model=_text(raw, "model") or defaults.model,
            max_tokens=_whole(raw, "max_tokens", minimum=1),
            timeout_seconds=_number(raw, "timeout_seconds", low=0.001) or defaults.timeout_seconds,
            connect_timeout_seconds=_number(raw, "connect_timeout_seconds", low=0.001)
            or defaults.connect_timeout_seconds,
            max_retries=_or(_whole(raw, "max_retries", minimum=0), defaults.max_retries),
            base_url=_text(raw, "base_url"),
            context_window=_whole(raw, "context_window", minimum=1) or defaults.context_window,
        )


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{WHERE} {key} must be a non-empty text, not {value!r}")
    return value.strip()


def _whole(raw: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{WHERE} {key} must be a whole number >= {minimum}, not {value!r}")
    return value


def _number(raw: Mapping[str, Any], key: str, *, low: float, high: float | None = None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{WHERE} {key} must be a number {bounds}, not {value!r}")
    return float(value)
