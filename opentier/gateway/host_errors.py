"""A failed host call → the :class:`~opentier.errors.OpenTierError` it stands for.

The host ends a failed call with the trailing metadata ``opentier-error-code`` (the same key as
``opentier.host.errors.ERROR_CODE_KEY``, which the gateway may not import; a test keeps them equal).
A known code becomes its class from :mod:`opentier.errors`, so the gateway's error handler gives it the
right HTTP status; an unknown one (a newer host, a plugin's error) keeps its code and the gRPC status.
A call that failed without a code never reached a servicer: the host is down, too slow, or does not
serve the method, and the client gets ``host_unavailable`` (503, ``Retry-After``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import grpc
import grpc.aio

from opentier import errors
from opentier.errors import AuthenticationError, HostUnavailableError, OpenTierError

ERROR_CODE_KEY = "opentier-error-code"

log = logging.getLogger(__name__)


@functools.cache
def error_classes() -> dict[str, type[OpenTierError]]:
    """Code → class of every error in :mod:`opentier.errors` (the first class wins a shared code)."""
    table: dict[str, type[OpenTierError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, OpenTierError):
            table.setdefault(value.code, value)
    return table


def error_code(err: grpc.aio.AioRpcError) -> str | None:
    """The ``opentier-error-code`` trailer of a failed call, if the host sent one."""
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def remote_error(err: grpc.aio.AioRpcError, method: str, *, retry_after: float) -> OpenTierError:
    """The error to raise in the gateway for ``err``, which ended a call of ``method``."""
    code = error_code(err)
    status = err.code()
    details = err.details() or status.name
    if code is None:
        return _transport_error(status, details, method, retry_after)
    if code == AuthenticationError.code:
        # The end user is authenticated already: a refusal here is about the gateway's own credential.
        log.error("the host refused the gateway's credential on %s: %s", method, details)
        return OpenTierError(
            "the gateway is misconfigured: the intelligence host refused its credential (host.token)"
        )
    if code == HostUnavailableError.code:
        return HostUnavailableError(details, retry_after=retry_after)
    known = error_classes().get(code)
    if known is not None:
        return _instantiate(known, details, code, status)
    return _instantiate(_remote_class(code, status.name), details, code, status)


def _transport_error(status: grpc.StatusCode, details: str, method: str, retry_after: float) -> OpenTierError:
    if status == grpc.StatusCode.UNAVAILABLE:
        message = "the intelligence host is not reachable; try again shortly"
    elif status == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = "the intelligence host did not answer in time; try again shortly"
    elif status == grpc.StatusCode.UNIMPLEMENTED:
        message = f"the intelligence host does not serve {method} (an older or partial host)"
    elif status == grpc.StatusCode.CANCELLED:
        message = "the call to the intelligence host was cancelled"
    elif status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # gRPC's own message-size refusal: the gateway's limits should have caught it first.
        return errors.SourceTooLargeError(f"the request is larger than the host accepts ({details})")
    else:
        log.error("call %s failed without an error code: %s %s", method, status.name, details)
        return OpenTierError("the intelligence host failed unexpectedly; the gateway log has the details")
    log.warning("call %s failed: %s (%s)", method, status.name, details)
    return HostUnavailableError(message, retry_after=retry_after)


def _instantiate(cls: type[OpenTierError], details: str, code: str, status: grpc.StatusCode) -> OpenTierError:
    try:
        return cls(details)
    except TypeError:  # a class whose constructor wants more: keep its code and the message
        return _remote_class(code, status.name)(details)


@functools.cache
def _remote_class(code: str, grpc_status: str) -> type[OpenTierError]:
    attributes: dict[str, Any] = {"code": code, "grpc_status": grpc_status}
    made: type[OpenTierError] = type("RemoteError", (OpenTierError,), attributes)
    return made
