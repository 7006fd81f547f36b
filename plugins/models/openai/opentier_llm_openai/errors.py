"""A server's refusals and failures as OpenTier's errors, so that clients get stable codes.

Servers differ in how they report an error: OpenAI and vLLM send ``{"error": {"message", "type",
"code"}}``, Ollama ``{"error": "text"}``, others ``{"detail": ...}`` or ``{"message": ...}``; in the
middle of a stream the same body arrives as an event. The HTTP status decides when there is one;
otherwise the error's ``code`` or ``type``.
"""

from __future__ import annotations

import json
from typing import Any

from opentier.errors import (
    LLMConfigError,
    LLMError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
)

#: Statuses worth another try before anything was streamed.
RETRYABLE = frozenset({429, 500, 502, 503, 504, 529})
#: Words of an error's ``type`` or ``code`` and what they mean.
BY_WORD: tuple[tuple[str, type[LLMError]], ...] = (
    ("rate_limit", LLMRateLimitedError),
    ("quota", LLMRateLimitedError),
    ("timeout", LLMTimeoutError),
    ("overload", LLMUnavailableError),
    ("unavailable", LLMUnavailableError),
    ("server_error", LLMUnavailableError),
    ("auth", LLMConfigError),
    ("permission", LLMConfigError),
    ("model_not_found", LLMConfigError),
    ("not_found", LLMConfigError),
    ("invalid", LLMRequestError),
    ("badrequest", LLMRequestError),
    ("context_length", LLMRequestError),
)


def by_status(status: int) -> type[LLMError]:
    if status == 429:
        return LLMRateLimitedError
    if status in (401, 402, 403, 404):
        return LLMConfigError
    if status in (408, 504):
        return LLMTimeoutError
    if status >= 500:
        return LLMUnavailableError
    if 400 <= status < 500:
        return LLMRequestError
    return LLMError


def describe(body: Any) -> tuple[str, str]:
    """``(message, kind)`` of an error body of any of the shapes servers use."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, str):
            return error, ""
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or json.dumps(error)[:500]
            kind = " ".join(str(error.get(key)) for key in ("type", "code") if error.get(key) is not None)
            return str(message), kind
    return str(body)[:500], ""


def for_status(status: int, body: Any, *, retry_after: str | None = None) -> LLMError:
    """The error for an HTTP error response."""
    message, kind = describe(body)
    error_class = by_status(status)
    text = f"the model server refused the call (HTTP {status}{', ' + kind if kind else ''}): {message}"
    if error_class is LLMRateLimitedError and retry_after:
        text += f"; retry after {retry_after} s"
    if status == 401:
        text += "; check OPENTIER_CHAT__OPENAI_API_KEY"
    if status == 404:
        text += "; check the plugin options base_url and model"
    return error_class(text)


def in_stream(body: Any) -> LLMError:
    """The error for an ``error`` object sent as an event in the middle of the stream."""
    message, kind = describe(body)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and code >= 400:
        error_class = by_status(code)
    else:
        folded = kind.lower().replace("-", "_")
        error_class = next((cls for word, cls in BY_WORD if word in folded), LLMError)
    return error_class(f"the model server failed mid-answer{' (' + kind + ')' if kind else ''}: {message}")
