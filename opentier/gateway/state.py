"""What one gateway app holds while it serves: settings, the database engine, the identity service.

Kept on the app (``app.extensions``), never in module globals, so several apps (tests) can live in one
process. Other parts of the gateway hang their own objects in :attr:`GatewayState.extras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart import Quart, current_app

from opentier.errors import OpenTierError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from opentier.config import Settings
    from opentier.gateway.identity.service import IdentityService

EXTENSION_KEY = "opentier"


@dataclass
class GatewayState:
    """The per-app objects; ``engine`` and ``identity`` exist while the app serves."""

    settings: Settings
    jwt_secret: str
    engine: AsyncEngine | None = None
    identity: IdentityService | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def require_identity(self) -> IdentityService:
        """The identity service; an error when the app is not serving (no database yet)."""
        if self.identity is None:
            raise OpenTierError("the gateway is not serving yet (its database is not open)")
        return self.identity


def gateway_state(app: Quart | None = None) -> GatewayState:
    """The :class:`GatewayState` of ``app`` (default: the app handling the current request)."""
    target = app if app is not None else current_app
    state = target.extensions.get(EXTENSION_KEY)
    if not isinstance(state, GatewayState):
        raise OpenTierError("this Quart app was not made by opentier.gateway.app.create_app")
    return state
