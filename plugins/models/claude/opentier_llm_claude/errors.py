"""Anthropic's errors as OpenTier's, so that clients get stable codes whatever the SDK raises.

The API names the kind of each error (``error.type`` in the body, also in an ``error`` event in the
middle of a stream, which arrives with HTTP status 200): that name decides first, the status second.
"""

from __future__ import annotations

import anthropic
import httpx2

from opentier.errors import (
    LLMConfigError,
    LLMError,
    LLMRateLimitedError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
)

#: ``error.type`` values of the API (https://docs.anthropic.com/en/api/errors).
BY_TYPE: dict[str, type[LLMError]] = {
    "invalid_request_error": LLMRequestError,
    "request_too_large": LLMRequestError,
    "authentication_error": LLMConfigError,
    "permission_error": LLMConfigError,
    "not_found_error": LLMConfigError,
    "billing_error": LLMConfigError,
    "rate_limit_error": LLMRateLimitedError,
    "timeout_error": LLMTimeoutError,
    "api_error": LLMUnavailableError,
    "overloaded_error": LLMUnavailableError,
}


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


def map_error(err: Exception, *, timeout_seconds: float) -> LLMError:
    """The OpenTier error for an exception of the SDK or of its HTTP client (raised mid-stream)."""
    if isinstance(err, anthropic.APITimeoutError | httpx2.TimeoutException):
        return LLMTimeoutError(
            f"Claude did not answer within {timeout_seconds:g} s (plugin option timeout_seconds)"
        )
    if isinstance(err, anthropic.APIConnectionError | httpx2.TransportError):
        return LLMUnavailableError(f"cannot reach the Anthropic API: {err}")
    if isinstance(err, anthropic.APIStatusError):
        kind = err.type if isinstance(err.type, str) else None
        error_class = BY_TYPE.get(kind or "") or by_status(err.status_code)
        detail = err.api_message or err.message
        where = f"HTTP {err.status_code}" if err.status_code != 200 else "in the stream"
        message = f"Claude refused the call ({kind or 'error'}, {where}): {detail}"
        if error_class is LLMRateLimitedError:
            retry_after = err.response.headers.get("retry-after")
            if retry_after:
                message += f"; retry after {retry_after} s"
        if (
            error_class is LLMConfigError
            and kind in ("authentication_error", None)
            and err.status_code == 401
        ):
            message += "; check OPENTIER_CHAT__ANTHROPIC_API_KEY"
        if err.request_id:
            message += f" (request id {err.request_id})"
        return error_class(message)
    if isinstance(err, anthropic.CredentialsError):
        return LLMConfigError(f"Claude credentials: {err}")
    return LLMError(f"Claude failed: {type(err).__name__}: {err}")
