"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work: the host serves, the database
answers), for load balancers and orchestrators. Neither needs a credential."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_response

from opentier.errors import DatabaseError, HostUnavailableError
from opentier.gateway.errors import documented_errors
from opentier.gateway.routes.context import host_client
from opentier.gateway.state import gateway_state

blueprint = Blueprint("health", __name__)
TAGS = ["Operations"]
SERVING = "SERVING"

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str = Field(description="`ok`")


class Readiness(BaseModel):
    status: str = Field(description="`ready`")
    hosts: dict[str, str] = Field(description="Health of each host target (`SERVING`, `NOT_SERVING`, ...).")


@blueprint.get("/healthz")
@tag(TAGS)
@validate_response(Health)
async def healthz() -> Health:
    """The gateway process is up (it may still be unable to reach the host: see /readyz)."""
    return Health(status="ok")


@blueprint.get("/readyz")
@tag(TAGS)
@documented_errors(503)
@validate_response(Readiness)
async def readyz() -> Readiness:
    """The gateway can serve: at least one host answers SERVING to the gRPC health check, and the
    gateway's database answers. 503 `host_unavailable` (with `Retry-After`) otherwise."""
    state = gateway_state()
    settings = state.settings.gateway
    hosts = await host_client().health(settings.readiness_timeout_seconds)
    if SERVING not in hosts.values():
        described = ", ".join(f"{target}: {status}" for target, status in hosts.items())
        raise HostUnavailableError(
            f"no intelligence host is serving ({described})", retry_after=settings.retry_after_seconds
        )
    if state.engine is not None:
        try:
            async with asyncio.timeout(settings.readiness_timeout_seconds):
                async with state.engine.connect() as connection:
                    await connection.execute(sa.text("SELECT 1"))
        except (TimeoutError, OSError, sa.exc.SQLAlchemyError) as err:
            log.warning("readiness: the gateway database does not answer: %s", err)
            raise DatabaseError("the gateway's database does not answer") from None
    return Readiness(status="ready", hosts=hosts)
