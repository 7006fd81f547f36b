"""One exception hierarchy for OpenTier, each class with a stable code.

The code travels across the gRPC boundary (as trailing metadata ``opentier-error-code``) and ends up in
the gateway's JSON error shape, so clients can branch on it. Codes never change once released; the
message is for people and may improve.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OpenTierError(Exception):
    """Base of every error OpenTier raises on purpose."""

    code: ClassVar[str] = "internal"
    #: Name of the ``grpc.StatusCode`` this error maps to when it crosses the gRPC boundary.
    grpc_status: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(OpenTierError):
    """The configuration file or environment holds a value OpenTier cannot use."""

    code = "config_invalid"
    grpc_status = "FAILED_PRECONDITION"


class PluginError(OpenTierError):
    """Base for plugin discovery and registration problems."""

    code = "plugin_error"
    grpc_status = "FAILED_PRECONDITION"


class PluginValidationError(PluginError):
    """A plugin implements a hook that does not exist or with the wrong arguments."""

    code = "plugin_invalid"


class DuplicateComponentError(PluginError):
    """Two plugins registered a component of the same kind under the same name."""

    code = "component_duplicate"


class UnknownComponentError(PluginError):
    """The configuration or a request names a component that no plugin registered."""

    code = "component_unknown"
    grpc_status = "INVALID_ARGUMENT"


class InvalidComponentError(PluginError):
    """A plugin registered something that is not a valid component of that kind."""

    code = "component_invalid"


class DatabaseError(OpenTierError):
    """Base for problems with the PostgreSQL server OpenTier uses."""

    code = "database_error"
    grpc_status = "UNAVAILABLE"


class EmbeddedDatabaseError(DatabaseError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""

    code = "embedded_database_error"


class MigrationError(DatabaseError):
    """Applying the schema migrations failed."""

    code = "migration_failed"


class AuthenticationError(OpenTierError):
    """The caller did not prove who it is (missing or wrong credential)."""

    code = "unauthenticated"
    grpc_status = "UNAUTHENTICATED"


class InvalidRequestError(OpenTierError):
    """A request is malformed or names something impossible."""

    code = "invalid_request"
    grpc_status = "INVALID_ARGUMENT"


class NotFoundError(OpenTierError):
    """The requested object does not exist for this caller."""

    code = "not_found"
    grpc_status = "NOT_FOUND"


class AlreadyExistsError(OpenTierError):
    """The object to create exists already (e.g. a collection name taken in this tenant)."""

    code = "already_exists"
    grpc_status = "ALREADY_EXISTS"


class DocumentError(OpenTierError):
    """A document could not be ingested; ``stage`` names the pipeline step that failed."""

    code = "document_failed"
    grpc_status = "INVALID_ARGUMENT"
    stage: str = "load"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        if stage is not None:
            self.stage = stage


class DocumentLoadError(DocumentError):
    """A loader could not read a source: corrupt, encrypted, empty or of the wrong format."""

    code = "document_unreadable"
    stage = "load"


class SourceRefusedError(InvalidRequestError):
    """A source is not allowed: a folder outside the configured roots, a private address, too big."""

    code = "source_refused"
    grpc_status = "PERMISSION_DENIED"


class SourceTooLargeError(SourceRefusedError):
    """A source is larger than the configured limit (an upload, a streamed file)."""

    code = "source_too_large"
    grpc_status = "INVALID_ARGUMENT"


class UploadTooLargeError(SourceTooLargeError):
    """An upload is larger than the gateway accepts (``gateway.max_upload_bytes``)."""

    code = "upload_too_large"


class LLMError(OpenTierError):
    """The model failed to answer (a bad response, an error it reported)."""

    code = "llm_failed"
    grpc_status = "INTERNAL"


class LLMUnavailableError(LLMError):
    """The model cannot be reached or is overloaded; trying again later may work."""

    code = "llm_unavailable"
    grpc_status = "UNAVAILABLE"


class LLMRateLimitedError(LLMError):
    """The model's provider refused the call for rate or quota reasons."""

    code = "llm_rate_limited"
    grpc_status = "RESOURCE_EXHAUSTED"


class LLMTimeoutError(LLMError):
    """The model did not answer, or stalled mid-answer, within the time limit."""

    code = "llm_timeout"
    grpc_status = "DEADLINE_EXCEEDED"


class LLMConfigError(LLMError):
    """The model is misconfigured: a missing or rejected API key, an unknown model name."""

    code = "llm_misconfigured"
    grpc_status = "FAILED_PRECONDITION"


class LLMRequestError(LLMError):
    """The provider rejected the request itself (too long a prompt, invalid options)."""

    code = "llm_request_invalid"
    grpc_status = "INVALID_ARGUMENT"


class PermissionDeniedError(OpenTierError):
    """The caller is known but may not do this (a missing scope, a member on an admin route)."""

    code = "permission_denied"
    grpc_status = "PERMISSION_DENIED"


class ConfirmationRequiredError(OpenTierError):
    """A destructive operation waits for its confirmation (e.g. the tenant's name); ``details`` says
    what it would remove."""

    code = "confirmation_required"
    grpc_status = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})


class RateLimitedError(OpenTierError):
    """Too many attempts or requests; ``retry_after`` says when trying again may work (seconds)."""

    code = "rate_limited"
    grpc_status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceededError(RateLimitedError):
    """A token quota (per tenant or user, per day or month) is used up until ``retry_after`` seconds."""

    code = "quota_exceeded"


class HostUnavailableError(OpenTierError):
    """The gateway cannot reach a healthy intelligence host; trying again later may work."""

    code = "host_unavailable"
    grpc_status = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HostBusyError(OpenTierError):
    """The host is at capacity: a chat turn waited its whole deadline for a place, the queue of waiting
    turns is full, or no database connection came free in time. Trying again shortly may work."""

    code = "host_busy"
    grpc_status = "UNAVAILABLE"
    #: ``retry_after`` when the raiser does not know better (a busy host usually frees up in seconds).
    DEFAULT_RETRY_AFTER_SECONDS: ClassVar[float] = 5.0

    def __init__(self, message: str, *, retry_after: float | None = DEFAULT_RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after
