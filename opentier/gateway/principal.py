"""Who is calling: the :class:`Principal` of a request, and the :func:`require` route decorator.

A caller proves who it is with ``Authorization: Bearer <credential>``, where the credential is a JWT
access token or an API key (``otk_...``); ``X-API-Key: otk_...`` works too. The principal's scopes
decide what it may do: an admin's token holds every scope, a member's holds all but ``admin``, an API
key holds the scopes it was created with (never more than its user's role allows, checked on each use).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal, TypeVar, cast

from quart import g, has_websocket_context, request, websocket
from quart_schema import security_scheme

from opentier.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")
SCOPES = ("read", "ingest", "chat", "admin")
#: Scopes each role holds; an API key holds at most these.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "member": frozenset({"read", "ingest", "chat"}),
}
API_KEY_HEADER = "X-API-Key"
#: Names of the security schemes declared in the OpenAPI document (see :mod:`opentier.gateway.app`).
SECURITY: tuple[dict[str, list[str]], ...] = ({"bearer": []}, {"apiKey": []})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user of a tenant, through a token or one of its API keys."""

    tenant_id: str
    user_id: str
    role: Role
    scopes: frozenset[str]
    api_key_id: str | None = None
    #: The login session (refresh-token family) an access token belongs to; None for API keys.
    session_id: str | None = None
    #: An admin of the operator tenant (``auth.operator_tenant``) holding the ``admin`` scope: may
    #: manage every tenant (docs/admin.md).
    operator: bool = False

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def current_principal() -> Principal:
    """The principal of the current request, set by :func:`require`; unauthenticated when absent."""
    found = getattr(g, "principal", None)
    if not isinstance(found, Principal):
        raise AuthenticationError("this request carries no valid credential")
    return found


def credential_from_headers() -> str:
    """The bearer credential of the current request or WebSocket; unauthenticated when missing."""
    headers = websocket.headers if has_websocket_context() else request.headers
    authorization = headers.get("Authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("the Authorization header must be `Bearer <token or API key>`")
        return value.strip()
    key = headers.get(API_KEY_HEADER, "").strip()
    if key:
        return key
    raise AuthenticationError("authentication required: send `Authorization: Bearer <token>` or an API key")


async def authenticate(credential: str) -> Principal:
    """The principal a credential (access token or API key) stands for; unauthenticated otherwise.

    The answer (or the refusal) is kept on ``g`` for the rest of the request, so that the rate limits,
    which look at the caller first, and the route's :func:`require` check a credential only once.
    """
    from opentier.gateway.state import gateway_state

    known = getattr(g, "authenticated", None)
    if isinstance(known, tuple) and known[0] == credential:
        if isinstance(known[1], Principal):
            return known[1]
        raise known[1]
    try:
        principal = await gateway_state().require_identity().authenticate(credential)
    except (AuthenticationError, PermissionDeniedError) as err:
        g.authenticated = (credential, err)
        raise
    g.authenticated = (credential, principal)
    return principal


def require_operator(principal: Principal) -> None:
    """Refuse (403) a caller that is not an operator: tenants are managed only by the admins of the
    operator tenant (``auth.operator_tenant``), never by another tenant's admins."""
    if not principal.operator:
        raise PermissionDeniedError(
            "only administrators of the operator tenant may manage tenants (see auth.operator_tenant)"
        )


def check_scopes(principal: Principal, scopes: tuple[str, ...]) -> None:
    """Refuse (403) a principal that lacks any of ``scopes``."""
    missing = [scope for scope in scopes if scope not in principal.scopes]
    if missing:
        how = "this API key lacks" if principal.api_key_id else "your role does not grant"
        raise PermissionDeniedError(f"{how} the scope(s) {', '.join(missing)} this request needs")


def require(*scopes: str) -> Callable[[F], F]:
    """Route decorator: authenticate the caller, then check it holds every one of ``scopes``.

    Put it right under the route decorator (above quart-schema's validators), so that an anonymous
    caller gets 401 before anything about the body is said. The principal is then available through
    :func:`current_principal`.
    """
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise InvalidRequestError(f"unknown scope(s) {unknown}; known: {', '.join(SCOPES)}")

    def decorator(func: F) -> F:
        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = await authenticate(credential_from_headers())
            check_scopes(principal, scopes)
            g.principal = principal
            return await func(*args, **kwargs)

        # Kept on the view (and copied up by the decorators above it) so tests can find, say, every
        # route that needs `admin`.
        wrapper.required_scopes = scopes  # type: ignore[attr-defined]
        return cast(F, security_scheme(list(SECURITY))(wrapper))

    return decorator
