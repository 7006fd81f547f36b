"""Token quotas per tenant and per user, per day and per month (contract; implementation pending).

Usage is charged from the ``usage`` events the host streams (input + output tokens of each turn) into a
ledger in the gateway's database; a quota compares a period's sum with ``limits.*_tokens_per_*``
(0: unlimited). Periods are UTC calendar days and months.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from opentier.gateway.principal import Principal

#: Characters per token assumed while a turn streams, before the host reports the real counts.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A cautious estimate of the tokens of streamed ``text`` (never 0 for non-empty text)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """The tightest quota of a caller: what is left of it and when its period ends."""

    scope: str  # "tenant" or "user"
    period: str  # "day" or "month"
    limit: int
    used: int
    resets_at: str  # ISO 8601, UTC

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class UsageCharge:
    """The tokens of one turn, as the host reported them (or as estimated when it could not)."""

    input_tokens: int
    output_tokens: int
    llm: str
    model: str
    conversation_id: str | None
    message_id: str | None
    estimated: bool = False


class TokenQuotas:
    """Checks and charges token quotas; one per gateway app (``gateway_state().extras["quotas"]``)."""

    async def tightest(self, principal: Principal) -> QuotaWindow | None:
        """The caller's quota with the least left (None: no quota applies)."""
        raise NotImplementedError

    async def check(self, principal: Principal) -> QuotaWindow | None:
        """:meth:`tightest`, refused with :class:`~opentier.errors.QuotaExceededError` when used up."""
        raise NotImplementedError

    async def charge(self, principal: Principal, charge: UsageCharge) -> None:
        """Record one turn's tokens against the caller's tenant, user and API key."""
        raise NotImplementedError
