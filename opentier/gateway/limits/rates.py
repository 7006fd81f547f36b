"""Request rate limits per API key, per user, per tenant and per client address, with the ``limits``
library.

Every request and every WebSocket connect counts once against each limit that applies to it (the
address always; the user and the API key when the request carries a valid credential; the tenant, all
its users together, when an admin set a tenant limit). A user's own limit set by an admin replaces the
per-user and per-API-key defaults for that user (:mod:`.overrides`, read through a per-gateway cache,
so a caller without overrides costs a dictionary lookup more than before). Windows are
fixed (``limits``' fixed-window strategy: one counter increment per limit, nothing else), so a check
costs a few dictionary operations in memory or one round trip per limit to Redis. Over a limit: 429
``rate_limited`` with ``Retry-After``; a WebSocket is accepted and closed with 4429. Every limited
answer carries ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` of its tightest
limit and ``RateLimit-Policy`` with all of them. See docs/limits.md.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.errors import StorageError
from quart import Quart, Response, g, has_websocket_context, request, websocket

from opentier.config import LimitsSettings
from opentier.errors import AuthenticationError, OpenTierError, RateLimitedError
from opentier.gateway.limits.overrides import NO_OVERRIDES, CallerOverrides, LimitOverrides
from opentier.gateway.limits.storage import open_storage
from opentier.gateway.origin import client_address
from opentier.gateway.principal import Principal, authenticate, credential_from_headers

log = logging.getLogger(__name__)

#: Probes and scrapes are never limited (a load balancer must always reach them).
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Query parameter carrying the credential of a WebSocket (browsers cannot set headers on one).
ACCESS_TOKEN_PARAM = "access_token"
#: WebSocket close code of a connection refused by a rate limit.
WS_CLOSE_RATE_LIMITED = 4429
#: Key of the :class:`RateLimits` in ``gateway_state().extras``.
EXTRAS_KEY = "rate_limits"
#: Seconds between two log lines about an unreachable rate-limit storage.
STORAGE_WARNING_INTERVAL = 60.0

_NOUNS = {
    "api_key": "this API key",
    "user": "this user",
    "tenant": "this tenant (all its users together)",
    "address": "this client address",
}


def parse_limits(value: str) -> list[RateLimitItem]:
    """The items of a ``limits`` string (``"60 per minute; 1000 per hour"``); empty: none."""
    return parse_many(value) if value.strip() else []


@dataclass(frozen=True, slots=True)
class RateDecision:
    """What the limits say about one request: allowed or not, and the tightest limit's state."""

    allowed: bool
    kind: str
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int
    policy: str

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` response headers (reset in seconds from now)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": self.policy,
        }

    @property
    def message(self) -> str:
        return (
            f"too many requests for {_NOUNS[self.kind]} ({self.limit} per {_window(self.window_seconds)}); "
            f"try again in {self.reset_seconds} seconds"
        )


def _window(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


@dataclass(frozen=True, slots=True)
class _Count:
    kind: str
    item: RateLimitItem
    key: str
    count: int

    @property
    def remaining(self) -> int:
        return max(0, self.item.amount - self.count)


class RateLimits:
    """The rate limits of one gateway app: its items per kind and one ``limits`` storage."""

    def __init__(
        self,
        settings: LimitsSettings,
        storage: Storage | None = None,
        *,
        overrides: LimitOverrides | None = None,
    ) -> None:
        self.items: dict[str, list[RateLimitItem]] = {
            "api_key": parse_limits(settings.per_api_key),
            "user": parse_limits(settings.per_user),
            "address": parse_limits(settings.per_address),
        }
        self.storage = storage if storage is not None else open_storage(settings.storage, "limits.storage")
        #: Limits set by admins per tenant and per user (None: the defaults only).
        self.overrides = overrides
        self._warned_at = -math.inf

    @property
    def active(self) -> bool:
        """Whether a request may meet a limit: a default one, or one an admin may set."""
        return any(self.items.values()) or self.overrides is not None

    @property
    def needs_principal(self) -> bool:
        """Whether a default limit is keyed by the caller (so its credential must be checked first)."""
        return bool(self.items["api_key"] or self.items["user"])

    async def hit(
        self,
        *,
        api_key: str | None = None,
        user: str | None = None,
        address: str | None = None,
        tenant: str | None = None,
        overrides: CallerOverrides = NO_OVERRIDES,
    ) -> RateDecision | None:
        """Count one request against every limit that applies (the defaults, replaced or completed by
        the caller's ``overrides``); None when none does (or the storage is unreachable: the limits then
        let requests through, and say so in the log)."""
        items = self.items
        if overrides.user_requests is not None or overrides.tenant_requests:
            items = {
                # The user's own limit covers its keys: their requests are the user's requests.
                "api_key": items["api_key"] if overrides.user_requests is None else [],
                "user": items["user"] if overrides.user_requests is None else overrides.user_requests,
                "tenant": overrides.tenant_requests or [],
                "address": items["address"],
            }
        keys = {"api_key": api_key, "user": user, "tenant": tenant, "address": address}
        try:
            counts = [
                await self._count(kind, item, ident)
                for kind, ident in keys.items()
                if ident is not None
                for item in items.get(kind, ())
            ]
            if not counts:
                return None
            refused = [count for count in counts if count.count > count.item.amount]
            if refused:
                resets = [(await self._reset_in(count), count) for count in refused]
                reset, tightest = max(resets, key=lambda pair: pair[0])
            else:
                tightest = min(counts, key=lambda count: (count.remaining, -count.item.get_expiry()))
                reset = await self._reset_in(tightest)
        except StorageError as err:
            self._storage_failed(err)
            return None
        return RateDecision(
            allowed=not refused,
            kind=tightest.kind,
            limit=tightest.item.amount,
            window_seconds=tightest.item.get_expiry(),
            remaining=tightest.remaining,
            reset_seconds=reset,
            policy=_policy(count.item for count in counts),
        )

    async def _count(self, kind: str, item: RateLimitItem, ident: str) -> _Count:
        key = item.key_for("rate", kind, ident)
        return _Count(kind, item, key, await self.storage.incr(key, item.get_expiry()))

    async def _reset_in(self, count: _Count) -> int:
        expires = await self.storage.get_expiry(count.key)
        return max(1, math.ceil(expires - time.time()))

    def _storage_failed(self, err: StorageError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= STORAGE_WARNING_INTERVAL:
            self._warned_at = now
            log.warning("rate limits are not applied: their storage failed (%s)", err.storage_error)


def _policy(items: Iterable[RateLimitItem]) -> str:
    seen: dict[tuple[int, int], None] = {}
    for item in items:
        seen[(item.amount, item.get_expiry())] = None
    return ", ".join(f"{amount};w={window}" for amount, window in seen)


async def _caller(limits: RateLimits) -> Principal | None:
    """The caller when its credential is valid, else None; never refuses (the route's own
    ``require`` answers 401/403, from the same check, kept on ``g``)."""
    if not limits.needs_principal and (limits.overrides is None or not await limits.overrides.tenants()):
        return None
    try:
        credential = credential_from_headers()
    except AuthenticationError:
        credential = websocket.args.get(ACCESS_TOKEN_PARAM, "") if has_websocket_context() else ""
    if not credential:
        return None
    try:
        return await authenticate(credential)
    except OpenTierError:
        return None


async def decide(limits: RateLimits) -> RateDecision | None:
    """Count the current request or WebSocket against ``limits``."""
    principal = await _caller(limits)
    if principal is None:
        return await limits.hit(address=client_address() or "unknown")
    overrides = NO_OVERRIDES
    if limits.overrides is not None:
        overrides = await limits.overrides.for_caller(principal.tenant_id, principal.user_id)
    return await limits.hit(
        api_key=principal.api_key_id,
        user=principal.user_id,
        tenant=principal.tenant_id,
        address=client_address() or "unknown",
        overrides=overrides,
    )


def install(app: Quart, limits: RateLimits) -> None:
    """Check ``limits`` before each request and WebSocket of ``app`` (not the probes), and add the
    ``RateLimit-*`` headers to each limited answer."""
    if not limits.active:
        return

    @app.before_request
    async def _limit_request() -> None:
        if request.path in UNLIMITED_PATHS:
            return
        decision = await decide(limits)
        if decision is None:
            return
        g.rate_limit = decision
        if not decision.allowed:
            raise RateLimitedError(decision.message, retry_after=decision.reset_seconds)

    @app.after_request
    async def _rate_limit_headers(response: Response) -> Response:
        decision = g.get("rate_limit")
        if isinstance(decision, RateDecision):
            response.headers.update(decision.headers())
        return response

    @app.before_websocket
    async def _limit_websocket() -> Response | None:
        if websocket.path in UNLIMITED_PATHS:
            return None
        decision = await decide(limits)
        if decision is None or decision.allowed:
            return None
        # Browsers cannot read an HTTP refusal of a WebSocket: accept, say why, close with 4429.
        await websocket.accept()
        await websocket.send(
            json.dumps(
                {
                    "type": "error",
                    "code": RateLimitedError.code,
                    "message": decision.message,
                    "retry_after": decision.reset_seconds,
                }
            )
        )
        await websocket.close(WS_CLOSE_RATE_LIMITED, RateLimitedError.code)
        return Response("", status=429)
