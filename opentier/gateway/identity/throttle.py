"""Login throttling with the ``limits`` library: failed sign-ins counted per account and per address.

Only failures count, in a moving window: a person who types the password right is never slowed down,
while guessing against one account (from many addresses) or many accounts (from one address) stops at
the configured limit with 429 and ``Retry-After``. The storage is in memory by default; several gateways
share a Redis one through ``auth.throttle_storage``.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter

from opentier.config import AuthSettings
from opentier.errors import RateLimitedError
from opentier.gateway.limits.storage import open_storage


class LoginThrottle:
    """Counts failed sign-ins and refuses attempts over the limits."""

    def __init__(self, auth: AuthSettings) -> None:
        self._limiter = MovingWindowRateLimiter(open_storage(auth.throttle_storage, "auth.throttle_storage"))
        self._account = parse_many(auth.login_limit_per_account)
        self._address = parse_many(auth.login_limit_per_address)

    async def check(self, account: str, address: str | None) -> None:
        """Refuse (429) when the account or the address already used up its failed attempts."""
        waits = [await self._wait(item, "account", account) for item in self._account]
        if address is not None:
            waits += [await self._wait(item, "address", address) for item in self._address]
        longest = max(waits, default=0.0)
        if longest > 0:
            raise RateLimitedError(
                f"too many failed sign-ins; try again in {math.ceil(longest)} seconds", retry_after=longest
            )

    async def failed(self, account: str, address: str | None) -> None:
        """Count one failed attempt against the account and the address."""
        for item in self._account:
            await self._limiter.hit(item, "login-account", account)
        if address is not None:
            for item in self._address:
                await self._limiter.hit(item, "login-address", address)

    async def succeeded(self, account: str) -> None:
        """Forget the account's failures (the address keeps its count: it may be guessing others)."""
        for item in self._account:
            await self._limiter.clear(item, "login-account", account)

    async def _wait(self, item: RateLimitItem, kind: str, key: str) -> float:
        if await self._limiter.test(item, f"login-{kind}", key):
            return 0.0
        stats = await self._limiter.get_window_stats(item, f"login-{kind}", key)
        return max(1.0, stats.reset_time - time.time())
