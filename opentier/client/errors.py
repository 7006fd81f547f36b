"""The client's exceptions: the gateway's one JSON error shape, turned into typed Python errors.

Every error the gateway answers, ``{"error": {"code", "message", "request_id"}}`` with an HTTP status,
becomes an :class:`APIError` subclass chosen by its stable ``code`` first, then by its status, carrying
``code``, ``status``, ``request_id`` and, for 429 and 503, ``retry_after`` (seconds)::

    try:
        client.get_collection("0b6c...")
    except NotFoundError as err:
        print(err.code, err.status, err.request_id)      # not_found 404 5d1f...
    except RateLimitedError as err:
        time.sleep(err.retry_after or 1)

A gateway that cannot be reached at all raises :class:`TransportError` (no status).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

#: HTTP status of the gateway's stable error codes, for errors that arrive without one (a WebSocket
#: refusal, a chat turn's ``error`` event). A code missing here keeps ``status = None``.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "component_unknown": 400,
    "llm_request_invalid": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "source_refused": 403,
    "not_found": 404,
    "stream_events_expired": 404,
    "already_exists": 409,
    "turn_in_progress": 409,
    "request_too_large": 413,
    "upload_too_large": 413,
    "source_too_large": 413,
    "document_failed": 422,
    "document_unreadable": 422,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "llm_rate_limited": 429,
    "internal": 500,
    "llm_failed": 502,
    "llm_misconfigured": 502,
    "host_unavailable": 503,
    "host_busy": 503,
    "llm_unavailable": 503,
    "database_error": 503,
    "llm_timeout": 504,
}


class ClientError(Exception):
    """Base of every error this client raises."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "client_error",
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The gateway's stable error code (branch on it).
        self.code = code
        #: The HTTP status, ``None`` when the error did not come as an HTTP answer.
        self.status = status
        #: The gateway's request id: quote it when reporting a problem (it is in the gateway's logs).
        self.request_id = request_id
        #: Seconds to wait before trying again (429 and 503), when the gateway said.
        self.retry_after = retry_after

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"[{self.code}]{status} {self.message}"


class TransportError(ClientError):
    """No answer from the gateway: it could not be reached, the connection broke, or it timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="transport_error")


class WaitTimeoutError(ClientError):
    """A wait (for an ingestion job) took longer than its ``timeout``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="wait_timeout")


class ProtocolError(ClientError):
    """The gateway sent something this client does not understand (another protocol version?)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="protocol_error")


class APIError(ClientError):
    """The gateway refused or failed a request and said why."""


class BadRequestError(APIError):
    """400: the request is invalid (``invalid_request``, ``component_unknown``...)."""


class AuthenticationError(APIError):
    """401 ``unauthenticated``: no credential, or a wrong, expired or revoked one."""


class PermissionDeniedError(APIError):
    """403: the credential lacks a scope, or the tenant is suspended."""


class NotFoundError(APIError):
    """404 ``not_found``: no such thing (or it belongs to another tenant)."""


class ConflictError(APIError):
    """409: ``already_exists``, or ``turn_in_progress`` on a chat connection."""


class PayloadTooLargeError(APIError):
    """413: the upload or the request body is over the gateway's limit."""


class UnprocessableError(APIError):
    """422: the document could not be read or processed."""


class RateLimitedError(APIError):
    """429: too many requests; :attr:`retry_after` says when to try again."""


class QuotaExceededError(RateLimitedError):
    """429 ``quota_exceeded``: the token quota of your tenant or user is used up until ``retry_after``."""


class ServerError(APIError):
    """5xx: the gateway, the host or the model failed."""


class ServiceUnavailableError(ServerError):
    """503: no intelligence host answers (``host_unavailable``) or it is busy; see :attr:`retry_after`."""


class ChatError(APIError):
    """A chat turn failed after it started (its ``error`` event); :attr:`answer` holds what came."""

    def __init__(self, message: str, *, answer: Any = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        #: The :class:`~opentier.client.answer.Answer` streamed before the failure.
        self.answer = answer


_BY_CODE: dict[str, type[APIError]] = {
    "quota_exceeded": QuotaExceededError,
    "rate_limited": RateLimitedError,
    "llm_rate_limited": RateLimitedError,
    "turn_in_progress": ConflictError,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_class(code: str, status: int | None) -> type[APIError]:
    """The exception class for a gateway error: by its code first, then by its HTTP status."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    if status is not None and status >= 500:
        return ServerError
    return APIError


def api_error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """A typed error from its parts; ``status`` defaults to the one the gateway gives ``code``."""
    status = status if status is not None else STATUS_BY_CODE.get(code)
    cls = error_class(code, status)
    return cls(message, code=code, status=status, request_id=request_id, retry_after=retry_after)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; ``None`` when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def error_from_body(status: int, body: Any, headers: Mapping[str, str], *, fallback: str = "") -> APIError:
    """The typed error of an HTTP answer with status ``status`` and decoded JSON ``body``.

    A body in another shape (a proxy's HTML page, say) still gives an error of the right class, with
    the code ``http_<status>`` and the start of the text as its message.
    """
    retry_after = parse_retry_after(headers.get("retry-after"))
    request_id = headers.get("x-request-id")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        if isinstance(error.get("retry_after"), int | float) and retry_after is None:
            retry_after = float(error["retry_after"])
        return api_error(
            error["code"],
            str(error.get("message") or error["code"]),
            status=status,
            request_id=str(error.get("request_id") or request_id or "") or None,
            retry_after=retry_after,
        )
    message = fallback.strip()[:200] or f"the gateway answered HTTP {status}"
    return error_class("", status)(
        message, code=f"http_{status}", status=status, request_id=request_id, retry_after=retry_after
    )


def error_from_message(data: Mapping[str, Any], *, status: int | None = None) -> APIError:
    """The typed error of an ``error`` message or event of a chat stream (it carries no HTTP status)."""
    retry_after = data.get("retry_after")
    return api_error(
        str(data.get("code") or "internal"),
        str(data.get("message") or "the chat stream failed"),
        status=status,
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
    )
