"""Which tenant the local commands act for: the gateway's tenant of that name, when there is one.

The host knows tenants only by the id the gateway puts in each call's Caller (the gateway's tenant
UUID). The local commands (``opentier ingest``, ``search``, ``chat``...) call the host directly with
the host token, so ``--tenant default`` must become the id the gateway uses for its tenant
``default``, or what they ingest would be invisible on the web page and through the API. The name is
looked up in the gateway's ``tenants`` table (by name, or by id when an id is given). When the
database has no such tenant (a host without a gateway), or cannot be reached (the host call that
follows then fails with its own message), the value is used as it is, as before.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.errors import OpenTierError

log = logging.getLogger(__name__)

#: Seconds to wait for the database: the lookup must not hold a command when PostgreSQL is away.
LOOKUP_TIMEOUT_SECONDS = 3.0

_LOOKUP = sa.text(
    "SELECT id::text FROM gateway.tenants WHERE name = :value OR id::text = lower(:value) "
    "ORDER BY (name = :value) DESC LIMIT 1"
)


async def host_tenant_id(settings: Settings, value: str) -> str:
    """The tenant id to put in the Caller for ``--tenant value``: the gateway's id of the tenant named
    (or numbered) ``value``, else ``value`` itself."""
    try:
        engine = create_engine(
            settings,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=False,
            connect_args={"timeout": LOOKUP_TIMEOUT_SECONDS},
        )
    except (OpenTierError, OSError) as err:  # no usable database settings, or unreadable: nothing to ask
        log.debug("tenant %r used as it is: %s", value, err)
        return value
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(_LOOKUP, {"value": value})
    except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as err:
        # No gateway schema (a host alone), or no database to ask: the value is the tenant.
        log.debug("tenant %r used as it is: the gateway's tenants cannot be read (%s)", value, err)
        return value
    finally:
        await engine.dispose()
    return str(found) if found is not None else value
