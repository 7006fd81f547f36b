"""One JSON error shape for every gateway response: ``{"error": {"code", "message", "request_id"}}``.

The HTTP status comes from the error's stable code (:data:`STATUS_BY_CODE`), or, for a code this table
does not know yet, from its gRPC status (:data:`STATUS_BY_GRPC`), so an error class added later still gets
a sensible status. Unexpected exceptions become 500 ``internal`` with a generic message: the details go
to the log with the request id, never to the client; except PostgreSQL being unreachable, which is 503
``database_error`` (:mod:`opentier.db.faults`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError, document_response
from werkzeug.exceptions import HTTPException

from opentier.db.faults import database_fault
from opentier.errors import OpenTierError
from opentier.gateway.request_id import current_request_id, new_request_id

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds a client is told to wait (``Retry-After``) when an error does not say.
DEFAULT_RETRY_AFTER_SECONDS = 5

#: HTTP status of each stable error code of :mod:`opentier.errors`.
STATUS_BY_CODE: dict[str, int] = {
    "internal": 500,
    "config_invalid": 500,
    "plugin_error": 500,
    "plugin_invalid": 500,
    "component_duplicate": 500,
    "component_invalid": 500,
    "component_unknown": 400,
    "database_error": 503,
    "embedded_database_error": 503,
    "migration_failed": 503,
    "unauthenticated": 401,
    "permission_denied": 403,
    "invalid_request": 400,
    "not_found": 404,
    "already_exists": 409,
    "confirmation_required": 409,
    "document_failed": 422,
    "document_unreadable": 422,
    "source_refused": 403,
    "source_too_large": 413,
    "upload_too_large": 413,
    "llm_failed": 502,
    "llm_unavailable": 503,
    "llm_rate_limited": 429,
    "llm_timeout": 504,
    "llm_misconfigured": 502,
    "llm_request_invalid": 400,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "host_unavailable": 503,
    "host_busy": 503,
    # Codes of the `error` event ending a stream whose access was taken away (chat/revocation.py): what
    # the same credential now gets, so the OpenAI-compatible route can answer with the right status.
    "tenant_suspended": 403,
    "tenant_deleted": 403,
    "account_disabled": 401,
    "session_ended": 401,
    "api_key_revoked": 401,
}

#: Fallback for codes missing above: the status that matches the error's gRPC status.
STATUS_BY_GRPC: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
}

#: Codes of plain HTTP errors raised by the framework itself (unknown route, wrong method...).
HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

#: Statuses that tell the client to come back later.
RETRYABLE_STATUSES = frozenset({429, 503})


class ErrorDetail(BaseModel):
    """What went wrong: a stable code to branch on, a message for people, the request id to report."""

    code: str = Field(description="Stable error code, e.g. `not_found`, `unauthenticated`.")
    message: str = Field(description="What went wrong and, when possible, what to do about it.")
    request_id: str = Field(description="Id of the request; quote it when reporting a problem.")
    details: dict[str, Any] | None = Field(
        default=None,
        description="More about some errors, e.g. what a `confirmation_required` operation would delete.",
    )


class ErrorBody(BaseModel):
    """The body of every error response of the gateway."""

    error: ErrorDetail


class NoContent(BaseModel):
    """Marker for a documented response without a body (204); see :func:`documented_no_content`."""


def status_for(error: OpenTierError) -> int:
    """The HTTP status of ``error``: by its code, else by its gRPC status, else 500."""
    status = STATUS_BY_CODE.get(error.code)
    if status is None:
        status = STATUS_BY_GRPC.get(error.grpc_status, 500)
    return status


def error_response(
    code: str,
    message: str,
    status: int,
    *,
    retry_after: float | None = None,
    details: dict[str, Any] | None = None,
) -> Response:
    """A JSON error response in the one shape, with ``Retry-After`` on 429 and 503."""
    request_id = current_request_id() or new_request_id()
    body = ErrorBody(error=ErrorDetail(code=code, message=message, request_id=request_id, details=details))
    response = jsonify(body.model_dump(exclude_none=True))
    response.status_code = status
    response.headers["X-Request-ID"] = request_id
    if status in RETRYABLE_STATUSES:
        seconds = DEFAULT_RETRY_AFTER_SECONDS if retry_after is None else retry_after
        response.headers["Retry-After"] = str(max(1, math.ceil(seconds)))
    return response


def opentier_error_response(error: OpenTierError) -> Response:
    """The response for an :class:`OpenTierError` raised on purpose (its message is for the client)."""
    status = status_for(error)
    retry_after = getattr(error, "retry_after", None)
    if status >= 500 and status not in RETRYABLE_STATUSES:
        log.error("request failed with %s: %s", error.code, error.message)
    details = getattr(error, "details", None)
    return error_response(
        error.code,
        error.message,
        status,
        retry_after=retry_after if isinstance(retry_after, (int, float)) else None,
        details=details if isinstance(details, dict) else None,
    )


def validation_message(error: Exception) -> str:
    """A short message naming the offending fields of a quart-schema validation error."""
    if isinstance(error, ValidationError):
        parts = []
        for problem in error.errors()[:5]:
            where = ".".join(str(part) for part in problem["loc"]) or "body"
            parts.append(f"{where}: {problem['msg']}")
        return "invalid request: " + "; ".join(parts)
    text = str(error).strip()
    return f"invalid request: {text}" if text else "invalid request"


def documented_errors(*statuses: int) -> Callable[[F], F]:
    """Route decorator: list :class:`ErrorBody` as the response of each status in the OpenAPI document."""

    def decorator(func: F) -> F:
        for status in statuses:
            func = document_response(ErrorBody, status)(func)
        return func

    return decorator


def documented_no_content(func: F) -> F:
    """Route decorator: document a 204 response without a body."""
    return document_response(NoContent, 204)(func)


def register_error_handlers(app: Quart) -> None:
    """Send every error of ``app`` out in the one JSON shape."""

    @app.errorhandler(OpenTierError)
    async def _opentier(error: OpenTierError) -> Response:
        return opentier_error_response(error)

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(error: RequestSchemaValidationError) -> Response:
        return error_response("invalid_request", validation_message(error.validation_error), 400)

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Response:
        status = error.code or 500
        code = HTTP_CODES.get(status, "internal" if status >= 500 else "invalid_request")
        message = error.description or error.name
        return error_response(code, message, status)

    @app.errorhandler(UnicodeDecodeError)
    async def _undecodable(error: UnicodeDecodeError) -> Response:
        # Quart decodes a JSON or form body as UTF-8 only when the route reads it.
        return error_response("invalid_request", "invalid request: the body is not valid UTF-8", 400)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        fault = database_fault(error)
        if fault is not None:
            log.warning("request failed: %s (%s)", fault.message, error.__class__.__name__)
            return opentier_error_response(fault)
        log.exception("unexpected error while handling the request")
        return error_response("internal", "internal error; the request id identifies it in the logs", 500)
