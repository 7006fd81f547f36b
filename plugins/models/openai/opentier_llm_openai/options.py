"""The plugin's options, from ``[plugins.options.openai-compatible]`` in ``opentier.toml``.

The API key is not an option: it is a secret, read from ``chat.openai_api_key`` (environment variable
``OPENTIER_CHAT__OPENAI_API_KEY``); most local servers need none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentier.errors import ConfigError

_T = TypeVar("_T")
WHERE = "[plugins.options.openai-compatible]"
OPTION_KEYS = (
    "base_url",
    "model",
    "timeout_seconds",
    "connect_timeout_seconds",
    "max_retries",
    "max_retry_wait_seconds",
    "context_window",
    "max_tokens",
    "temperature",
    "include_usage",
    "extra_body",
)
#: Ollama's OpenAI-compatible endpoint on this machine.
DEFAULT_BASE_URL = "http://127.0.0.1:11434/v1"


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """Validated options (defaults shown)."""

    #: The server's API root, up to and including ``/v1``; ``/chat/completions`` is added to it.
    base_url: str = DEFAULT_BASE_URL
    #: The model name the server knows (``llama3.2``, ``Qwen/Qwen2.5-7B-Instruct``...); required.
    model: str | None = None
    #: Longest wait for the response to start, and between two pieces of the stream.
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    #: Retries of a call that failed before streaming began: connection refused, 429, 500, 502, 503, 504.
    max_retries: int = 2
    #: Longest ``Retry-After`` waited for; a server asking for more fails the call at once.
    max_retry_wait_seconds: float = 30.0
    #: Tokens of prompt and answer together that the model accepts (the server's context size).
    context_window: int = 8192
    #: Upper bound on the answer's tokens; the request's ``max_output_tokens`` applies below it.
    max_tokens: int | None = None
    #: Sampling temperature for every call; ``None`` uses the request's.
    temperature: float | None = None
    #: Ask for the token counts in the stream (``stream_options.include_usage``); turn off for a
    #: server that refuses the field. Without counts from the server, usage is counted here.
    include_usage: bool = True
    #: Fields added to every request body, for server-specific settings (``{"top_k": 20}``).
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> OpenAIOptions:
        """Options from a TOML table; an unknown key or a wrong value is a :class:`ConfigError`."""
        unknown = sorted(set(raw) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(
                f"{WHERE} has unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_KEYS)}"
            )
        defaults = cls()
        base_url = _text(raw, "base_url") or defaults.base_url
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"{WHERE} base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, not {base_url!r}"
            )
        extra_body = raw.get("extra_body", {})
        if not isinstance(extra_body, Mapping):
            raise ConfigError(f"{WHERE} extra_body must be a table, not {extra_body!r}")
        include_usage = raw.get("include_usage", True)
        if not isinstance(include_usage, bool):
            raise ConfigError(f"{WHERE} include_usage must be true or false, not {include_usage!r}")
        return cls(
            base_url=base_url.rstrip("/"),
            model=_text(raw, "model"),
            timeout_seconds=_number(raw, "timeout_seconds", low=0.001) or defaults.timeout_seconds,
            connect_timeout_seconds=_number(raw, "connect_timeout_seconds", low=0.001)
            or defaults.connect_timeout_seconds,
            max_retries=_or(_whole(raw, "max_retries", minimum=0), defaults.max_retries),
            max_retry_wait_seconds=_or(
                _number(raw, "max_retry_wait_seconds", low=0.0), defaults.max_retry_wait_seconds
            ),
            context_window=_whole(raw, "context_window", minimum=1) or defaults.context_window,
            max_tokens=_whole(raw, "max_tokens", minimum=1),
            temperature=_number(raw, "temperature", low=0.0, high=2.0),
            include_usage=include_usage,
            extra_body=dict(extra_body),
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
        bounds = f"from {low:g} to {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"{WHERE} {key} must be a number {bounds}, not {value!r}")
    return float(value)
