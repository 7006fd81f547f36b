"""Shapes of the admin audit log and platform health routes (``/v1/admin/audit``, ``/v1/admin/health``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from opentier.db.models.gateway import AuditEvent
from opentier.gateway.schemas.common import PageQuery
from opentier.generated.intelligence.v1 import plugins_pb2


class AuditQuery(PageQuery):
    """Which audit events to list, newest first."""

    actor: str | None = Field(default=None, max_length=64, description="Only events of this user id.")
    action: str | None = Field(
        default=None,
        max_length=200,
        description="Only this action (`login.succeeded`), or a prefix ending in `.` (`user.`).",
    )
    since: datetime | None = Field(default=None, description="Only events at or after this time (ISO 8601).")
    until: datetime | None = Field(default=None, description="Only events before this time (ISO 8601).")


class AuditEventOut(BaseModel):
    """Who did what to what, from where, in which request."""

    id: str = Field(description="Increasing number of the event (as a string).")
    at: datetime
    action: str = Field(description="What happened: `login.succeeded`, `user.created`, `api_key.created`...")
    actor_user_id: str | None = Field(description="The user who acted; null for anonymous events.")
    actor_api_key_id: str | None = Field(description="The API key the user acted through, if any.")
    target: str | None = Field(description="What was acted on (a user or key id), if anything.")
    address: str | None = Field(description="The client address.")
    request_id: str | None
    details: dict[str, Any] = Field(description="More about the event; never a secret.")

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=str(event.id),
            at=event.at,
            action=event.action,
            actor_user_id=None if event.actor_user_id is None else str(event.actor_user_id),
            actor_api_key_id=None if event.actor_api_key_id is None else str(event.actor_api_key_id),
            target=event.target,
            address=event.address,
            request_id=event.request_id,
            details=dict(event.details),
        )


class AuditPage(BaseModel):
    """One page of the tenant's audit log, newest first."""

    events: list[AuditEventOut]
    next_page_token: str | None = Field(description="Pass as `page_token` for the next page; null: last.")


class ComponentOut(BaseModel):
    kind: str = Field(description="`loader`, `cleaner`, `embedder`, `retriever` or `llm`.")
    name: str
    description: str


class PluginOut(BaseModel):
    """A plugin the host loaded and the components it registered."""

    name: str = Field(description="Entry-point name.")
    distribution: str | None
    version: str | None
    module: str
    components: list[ComponentOut]

    @classmethod
    def from_pb(cls, plugin: plugins_pb2.Plugin) -> PluginOut:
        return cls(
            name=plugin.name,
            distribution=plugin.distribution or None,
            version=plugin.version or None,
            module=plugin.module,
            components=[
                ComponentOut(kind=c.kind, name=c.name, description=c.description) for c in plugin.components
            ],
        )


class PluginFailureOut(BaseModel):
    """A plugin that is installed on the host but did not load."""

    name: str
    distribution: str | None
    version: str | None
    error: str

    @classmethod
    def from_pb(cls, failure: plugins_pb2.PluginFailure) -> PluginFailureOut:
        return cls(
            name=failure.name,
            distribution=failure.distribution or None,
            version=failure.version or None,
            error=failure.error,
        )


class PlatformHealth(BaseModel):
    """The host targets' gRPC health and the host's plugins."""

    hosts: dict[str, str] = Field(description="Health of each host target (`SERVING`, `NOT_SERVING`, ...).")
    plugins: list[PluginOut] = Field(description="Plugins a serving host loaded; empty if none answers.")
    plugin_failures: list[PluginFailureOut] = Field(description="Installed plugins that failed to load.")
    plugins_error: str | None = Field(description="Why the plugins could not be listed, if they could not.")
