"""The plugin's options, from ``[plugins.options.openai-compatible]`` in ``opentier.toml``.

The API key is not an option: it is a secret, read from ``chat.openai_api_key`` (environment variable
``OPENTIER_CHAT__OPENAI_API_KEY``); most local servers need none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentier.plugin_options import OptionTable

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
        table = OptionTable("openai-compatible", raw, OPTION_KEYS)
        defaults = cls()
        base_url = table.text("base_url") or defaults.base_url
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise table.error("base_url", f"an http(s) URL such as {DEFAULT_BASE_URL}", base_url)
        max_retries = table.whole("max_retries", minimum=0)
        max_retry_wait = table.number("max_retry_wait_seconds", low=0.0)
        include_usage = table.flag("include_usage")
        return cls(
            base_url=base_url.rstrip("/"),
            model=table.text("model"),
            timeout_seconds=table.number("timeout_seconds", low=0.001) or defaults.timeout_seconds,
            connect_timeout_seconds=table.number("connect_timeout_seconds", low=0.001)
            or defaults.connect_timeout_seconds,
            max_retries=defaults.max_retries if max_retries is None else max_retries,
            max_retry_wait_seconds=defaults.max_retry_wait_seconds
            if max_retry_wait is None
            else max_retry_wait,
            context_window=table.whole("context_window", minimum=1) or defaults.context_window,
            max_tokens=table.whole("max_tokens", minimum=1),
            temperature=table.number("temperature", low=0.0, high=2.0),
            include_usage=True if include_usage is None else include_usage,
            extra_body=table.table("extra_body") or {},
        )
