"""The admin's tenant's audit log (``/v1/admin/audit``) and the platform's health (``/v1/admin/health``:
the host targets and the host's plugins); an admin's key. See docs/gateway-auth.md::

    from opentier.client.admin import audit

    page = client.send(audit.list_events(action="user.", since=yesterday))
    health = client.send(audit.health())
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from opentier.client.calls import Call, _model, _page

AUDIT_PATH = "/v1/admin/audit"
HEALTH_PATH = "/v1/admin/health"
SERVING = "SERVING"


class AuditEvent(BaseModel):
    """Who did what to what, from where, in which request."""

    id: str
    at: datetime
    action: str
    actor_user_id: str | None = None
    actor_api_key_id: str | None = None
    target: str | None = None
    address: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AuditPage(BaseModel):
    events: list[AuditEvent]
    #: None on the last page.
    next_page_token: str | None = None


class Component(BaseModel):
    kind: str
    name: str
    description: str = ""


class Plugin(BaseModel):
    name: str
    distribution: str | None = None
    version: str | None = None
    module: str = ""
    components: list[Component] = Field(default_factory=list)


class PluginFailure(BaseModel):
    name: str
    distribution: str | None = None
    version: str | None = None
    error: str


class Health(BaseModel):
    """The gRPC health of each host target, and the plugins a serving host loaded."""

    hosts: dict[str, str]
    plugins: list[Plugin] = Field(default_factory=list)
    plugin_failures: list[PluginFailure] = Field(default_factory=list)
    plugins_error: str | None = None

    @property
    def serving(self) -> bool:
        """Every host target serves."""
        return bool(self.hosts) and all(status == SERVING for status in self.hosts.values())


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def list_events(
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int | None = None,
    page_token: str | None = None,
) -> Call[AuditPage]:
    """Events newest first: of user id ``actor``; ``action`` exact or a prefix ending in ``.``; ``since``
    included, ``until`` excluded (a time without an offset is UTC)."""
    params = _page(page_size, page_token, actor=actor, action=action, since=_time(since), until=_time(until))
    return Call("GET", AUDIT_PATH, _model(AuditPage), params=params)


def health() -> Call[Health]:
    return Call("GET", HEALTH_PATH, _model(Health))
