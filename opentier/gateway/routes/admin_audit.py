"""``GET /v1/admin/audit`` (the tenant's audit log, filtered and paged newest first) and
``GET /v1/admin/health`` (the host targets' gRPC health and the host's plugins); scope ``admin``, the
admin's own tenant only. See docs/gateway-auth.md, "Admin: audit log and health".
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response
from sqlalchemy.ext.asyncio import AsyncSession

from opentier.db.models.gateway import AuditEvent
from opentier.errors import DatabaseError, InvalidRequestError, OpenTierError
from opentier.gateway import rpc
from opentier.gateway.errors import documented_errors
from opentier.gateway.identity.paging import decode_token, encode_token
from opentier.gateway.principal import current_principal, require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.admin import (
    AuditEventOut,
    AuditPage,
    AuditQuery,
    PlatformHealth,
    PluginFailureOut,
    PluginOut,
)
from opentier.gateway.state import gateway_state
from opentier.generated.intelligence.v1 import plugins_pb2

blueprint = Blueprint("admin_audit", __name__, url_prefix="/v1/admin")
TAGS = ["Admin"]
#: Events of a page when ``page_size`` is not given.
DEFAULT_PAGE_SIZE = 50
SERVING = "SERVING"

log = logging.getLogger(__name__)


def blueprints() -> list[Blueprint]:
    return [blueprint]


def _aware(moment: datetime) -> datetime:
    """A time without an offset is taken as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError(f"{what}: not a user id") from None


def _after(token: str) -> tuple[datetime, int]:
    """The (at, id) of the last event of the previous page."""
    at, event_id = decode_token(token, 2)
    try:
        return datetime.fromisoformat(at), int(event_id)
    except ValueError:
        raise InvalidRequestError("page_token: not a token this server issued") from None


def audit_select(tenant_id: uuid.UUID, query: AuditQuery, limit: int) -> sa.Select[AuditEvent]:
    """The tenant's events matching ``query``, newest first, ``limit`` rows after the page token."""
    statement = sa.select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if query.actor is not None:
        statement = statement.where(AuditEvent.actor_user_id == _uuid(query.actor, "actor"))
    if query.action:
        if query.action.endswith("."):
            statement = statement.where(AuditEvent.action.startswith(query.action, autoescape=True))
        else:
            statement = statement.where(AuditEvent.action == query.action)
    if query.since is not None:
        statement = statement.where(AuditEvent.at >= _aware(query.since))
    if query.until is not None:
        statement = statement.where(AuditEvent.at < _aware(query.until))
    if query.page_token:
        at, event_id = _after(query.page_token)
        statement = statement.where(sa.tuple_(AuditEvent.at, AuditEvent.id) < sa.tuple_(at, event_id))
    return statement.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)


@blueprint.get("/audit")
@require("admin")
@tag(TAGS)
@documented_errors(400, 401, 403, 500)
@validate_querystring(AuditQuery)
@validate_response(AuditPage)
async def admin_audit(query_args: AuditQuery) -> AuditPage:
    """Your tenant's audit log, newest first (scope `admin`).

    Filter by `actor` (a user id), `action` (exact, or a prefix ending in `.` such as `user.`), and time
    (`since` included, `until` excluded). Pages are stable while new events arrive.
    """
    state = gateway_state()
    if state.engine is None:
        raise DatabaseError("the gateway's database is not open")
    size = query_args.page_size or DEFAULT_PAGE_SIZE
    statement = audit_select(uuid.UUID(current_principal().tenant_id), query_args, size + 1)
    async with AsyncSession(state.engine) as session:
        rows = list((await session.scalars(statement)).all())
    more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if more else None
    return AuditPage(
        events=[AuditEventOut.of(row) for row in rows],
        next_page_token=None if last is None else encode_token(last.at.isoformat(), str(last.id)),
    )


@blueprint.get("/health")
@require("admin")
@tag(TAGS)
@documented_errors(401, 403, 500)
@validate_response(PlatformHealth)
async def admin_health() -> PlatformHealth:
    """The gRPC health of each host target and the plugins the host loaded (scope `admin`).

    Answers 200 even when no host serves: `hosts` then says so and `plugins_error` tells why the plugins
    could not be listed.
    """
    client = host_client()
    timeout = gateway_state().settings.gateway.readiness_timeout_seconds
    hosts = await client.health(timeout)
    listed: plugins_pb2.ListPluginsResponse | None = None
    problem: str | None = None
    if SERVING in hosts.values():
        try:
            listed = await client.unary(rpc.LIST_PLUGINS, plugins_pb2.ListPluginsRequest(), caller())
        except OpenTierError as err:
            log.warning("admin health: the host's plugins could not be listed: %s", err)
            problem = f"{err.code}: {err}"
    else:
        problem = "host_unavailable: no intelligence host is serving"
    return PlatformHealth(
        hosts=hosts,
        plugins=[] if listed is None else [PluginOut.from_pb(p) for p in listed.plugins],
        plugin_failures=[] if listed is None else [PluginFailureOut.from_pb(f) for f in listed.failures],
        plugins_error=problem,
    )
