"""The plugin's options, from ``[plugins.options.claude]`` in ``opentier.toml``.

The API key is not an option: it is a secret, read from ``chat.anthropic_api_key`` (environment variable
``OPENTIER_CHAT__ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentier.plugin_options import OptionTable

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
        table = OptionTable("claude", raw, OPTION_KEYS)
        defaults = cls()
        max_retries = table.whole("max_retries", minimum=0)
        return cls(
            model=table.text("model") or defaults.model,
            max_tokens=table.whole("max_tokens", minimum=1),
            timeout_seconds=table.number("timeout_seconds", low=0.001) or defaults.timeout_seconds,
            connect_timeout_seconds=table.number("connect_timeout_seconds", low=0.001)
            or defaults.connect_timeout_seconds,
            max_retries=defaults.max_retries if max_retries is None else max_retries,
            base_url=table.text("base_url"),
            context_window=table.whole("context_window", minimum=1) or defaults.context_window,
        )
