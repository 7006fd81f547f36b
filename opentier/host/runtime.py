"""What the host's data services run on: the database engine, ingestion, search and chat.

One :class:`HostRuntime` per host process. :class:`~opentier.host.server.HostServer` starts it
before it serves and stops it after the last call ended: the ingestion workers stop (a batch in
progress rolls back and stays pending for the next start, here or on another host), then the
database pool closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.db.migrate import current_revisions, head_revisions
from opentier.db.tenancy import internal_scope
from opentier.db.url import database_url, display_url
from opentier.engine.chat import Chat, Conversations
from opentier.engine.collections import Collections
from opentier.engine.documents import Documents
from opentier.engine.jobs import Ingestion
from opentier.engine.search import Search
from opentier.errors import DatabaseError, MigrationError
from opentier.registry import Registry

log = logging.getLogger(__name__)

#: The schema side whose tables the host reads and writes.
SIDE = "intelligence"
#: Seconds past a chat turn's deadline after which an unfinished answer is known to be abandoned (or the
#: deadline itself, when shorter).
ABANDONED_MARGIN = 60.0
#: Longest interval between two sweeps for abandoned answers while the host runs.
ABANDONED_SWEEP_SECONDS = 60.0


class HostRuntime:
    """The AsyncEngine, Collections, Ingestion, Documents, Search and Chat of one host."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.db: AsyncEngine = create_engine(settings, tenancy=True)
        self.collections = Collections(self.db, registry, settings.ingestion.embedder)
        self.ingestion = Ingestion(self.db, settings.ingestion, registry, self.collections)
        self.documents = Documents(self.db)
        self.search = Search(self.db, registry, settings.retrieval, self.collections)
        self.conversations = Conversations(self.db)
        self.chat = Chat(settings.chat, registry, self.search, self.conversations)
        self._started = False
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check that the database answers and is migrated, then start the ingestion workers and the
        sweep for answers that a stopped host left unfinished."""
        await self.check_database()
        await self.fail_abandoned_answers()
        await self.ingestion.start()
        self._sweeper = asyncio.create_task(self._sweep_abandoned(), name="abandoned-answers-sweeper")
        self._started = True
        log.info("ingestion: %d workers on %s", self.settings.ingestion.worker_count(), self._where())

    async def stop(self) -> None:
        """Stop the workers and close the database pool; safe to call more than once."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._started:
            self._started = False
            await self.ingestion.stop()
        await self.db.dispose()

    async def fail_abandoned_answers(self) -> int:
        """Mark ``failed`` (``host_stopped``) the answers still ``in_progress`` past the longest a turn
        can last: their host stopped (a crash, a kill) before it could end them. Run at start and every
        so often, so that an answer a killed host left is settled even when the host restarted at once."""
        deadline = self.settings.chat.deadline_seconds
        with internal_scope():  # the answers of every tenant
            abandoned = await self.conversations.fail_abandoned(deadline + min(ABANDONED_MARGIN, deadline))
        if abandoned:
            log.warning("chat: %d answers left unfinished by a stopped host marked failed", abandoned)
        return abandoned

    async def _sweep_abandoned(self) -> None:
        interval = min(ABANDONED_SWEEP_SECONDS, max(0.5, self.settings.chat.deadline_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.fail_abandoned_answers()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeping abandoned answers failed; trying again in %.0fs", interval)

    async def check_database(self) -> None:
        """Refuse to serve on a database that is unreachable or whose schema is not up to date."""
        require_embedded_running(self.settings)
        try:
            async with self.db.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as err:
            hint = (
                "start it with `opentier db start` (or run everything with `opentier up`)"
                if self.settings.database.url is None
                else "check database.url, OPENTIER_DATABASE__PASSWORD and that the server runs"
            )
            raise DatabaseError(f"cannot connect to PostgreSQL at {self._where()}: {err}; {hint}") from err
        applied = (await current_revisions(self.settings, [SIDE]))[SIDE]
        head = head_revisions([SIDE])[SIDE]
        if applied != head:
            raise MigrationError(
                f"schema {SIDE!r} of {self._where()} is at {applied or 'no revision'}, this host needs "
                f"{head}: run `opentier db migrate` (or `opentier up`, which migrates)"
            )

    def _where(self) -> str:
        return display_url(database_url(self.settings))


def require_embedded_running(settings: Settings) -> None:
    """Refuse at once, with what to run, when the embedded PostgreSQL the settings use is stopped."""
    if settings.database.url is not None:
        return
    from opentier.db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres.from_settings(settings)
    if not server.status().running:
        raise DatabaseError(
            f"the embedded PostgreSQL of {server.data_dir} is not running: run `opentier db start` "
            "(and `opentier db migrate` once) before `opentier host serve`, or run everything with "
            "`opentier up`"
        )
