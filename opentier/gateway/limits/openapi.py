"""The limits in the OpenAPI document: every limited operation may answer 429 (with ``Retry-After`` and
the ``RateLimit-*`` headers), every operation that takes a body 413, and every one but the probes 503
(the database or the host unavailable)."""

from __future__ import annotations

from typing import Any

from opentier.gateway.limits.rates import UNLIMITED_PATHS

BODY_METHODS = frozenset({"post", "put", "patch"})
UNAVAILABLE = (
    "The database or the host is unavailable (`database_error`, `host_unavailable`) or the host is busy "
    "(`host_busy`); try again after `Retry-After` seconds"
)
TOO_MANY = "Too many requests (`rate_limited`), or no token quota left (`quota_exceeded`)"

_SECONDS = {"type": "integer", "minimum": 0}
RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": _SECONDS},
    "RateLimit-Limit": {
        "description": "Requests allowed in the tightest limit's window.",
        "schema": _SECONDS,
    },
    "RateLimit-Remaining": {"description": "Requests left in that window.", "schema": _SECONDS},
    "RateLimit-Reset": {"description": "Seconds until that window starts again.", "schema": _SECONDS},
    "RateLimit-Policy": {
        "description": "Every limit that applies, as `<requests>;w=<window seconds>`.",
        "schema": {"type": "string"},
    },
}


def document_limits(paths: dict[str, dict[str, Any]], error: dict[str, Any]) -> None:
    """Add the 429 answer with its headers, and the 413 one, to the operations of ``paths`` (``error``:
    the error response object)."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = dict(operation.get("responses", {}))  # shared between methods: copy
            if path not in UNLIMITED_PATHS:
                limited = responses.get(429) or {**error, "description": TOO_MANY}
                responses[429] = {**limited, "headers": RATE_LIMIT_HEADERS}
                responses.setdefault(503, {**error, "description": UNAVAILABLE})
            if method in BODY_METHODS:
                too_large = "The body is larger than this route accepts (`request_too_large`)"
                responses.setdefault(413, {**error, "description": too_large})
            operation["responses"] = responses
