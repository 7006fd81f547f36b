"""Open chat streams by owner, so that an admin operation ends them at once (docs/admin-users.md).

Every chat turn (WebSocket, SSE, OpenAI-compatible) is tracked while it runs: :meth:`OpenStreams.track`
gives it an :class:`OpenStream` whose ``ended`` event is set when an operation ends the access it runs
on — a tenant suspended or deleted, a user disabled or logged out by force, an API key revoked. The
turn then stops the host's answer and ends with an ``error`` event carrying the :class:`Ending`'s code.

This registry acts in this gateway process only; turns on other gateways notice the same change when
they next check their caller against the database (``streaming.revalidate_seconds``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from quart import Quart

from opentier.errors import AuthenticationError, PermissionDeniedError
from opentier.gateway.principal import Principal
from opentier.gateway.state import gateway_state

EXTRAS_KEY = "open_streams"

#: Codes of the ``error`` event that ends a stream whose access was taken away.
TENANT_SUSPENDED = "tenant_suspended"
TENANT_DELETED = "tenant_deleted"
ACCOUNT_DISABLED = "account_disabled"
SESSION_ENDED = "session_ended"
API_KEY_REVOKED = "api_key_revoked"

#: What people are told, the same on every gateway (these, and the checks of
#: :mod:`opentier.gateway.identity.liveness`).
TENANT_SUSPENDED_MESSAGE = "your tenant was suspended; ask its administrators"
TENANT_DELETED_MESSAGE = "your tenant is being deleted"
ACCOUNT_DISABLED_MESSAGE = "your account was disabled; ask an administrator of your tenant"
ACCOUNT_DELETED_MESSAGE = "your account was deleted"
SESSION_ENDED_MESSAGE = "your session was ended; sign in again"
API_KEY_REVOKED_MESSAGE = "the API key this stream uses was revoked"
API_KEY_EXPIRED_MESSAGE = "the API key this stream uses has expired"
#: The endings that concern the whole tenant: a new request is refused with 403, not 401.
TENANT_ENDINGS = frozenset({TENANT_SUSPENDED, TENANT_DELETED})


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a stream was ended: a stable ``code`` and a sentence for people."""

    code: str
    message: str


def refusal(ending: Ending) -> AuthenticationError | PermissionDeniedError:
    """What a turn that has not started yet raises for ``ending``: what any request with the same
    credential is refused with (403 for the tenant's endings, 401 otherwise)."""
    if ending.code in TENANT_ENDINGS:
        return PermissionDeniedError(ending.message)
    return AuthenticationError(ending.message)


@dataclass(eq=False, slots=True)
class OpenStream:
    """One running turn of ``principal``; ``ended`` is set (once) with ``ending`` when it must stop."""

    principal: Principal
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ending: Ending | None = None

    def end(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending
            self.ended.set()


class OpenStreams:
    """The turns running in this gateway process, and when each caller was last found live in the
    database (so that turns in quick succession on one WebSocket do not each ask again)."""

    #: Callers remembered as live at most; beyond, the oldest half is forgotten.
    MAX_REMEMBERED = 10_000

    def __init__(self) -> None:
        self._streams: set[OpenStream] = set()
        self._live: dict[Principal, float] = {}

    def seen_live(self, principal: Principal) -> None:
        """Remember that ``principal`` was just found live in the database."""
        if len(self._live) >= self.MAX_REMEMBERED:
            for known in sorted(self._live, key=self._live.__getitem__)[: self.MAX_REMEMBERED // 2]:
                del self._live[known]
        self._live[principal] = time.monotonic()

    def live_within(self, principal: Principal, seconds: float) -> bool:
        """Whether ``principal`` was found live less than ``seconds`` ago (and not ended since)."""
        seen = self._live.get(principal)
        return seen is not None and time.monotonic() - seen < seconds

    def __len__(self) -> int:
        return len(self._streams)

    @contextmanager
    def track(self, principal: Principal) -> Iterator[OpenStream]:
        """Track a turn of ``principal`` for as long as the block runs."""
        stream = OpenStream(principal)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)

    def end(
        self,
        ending: Ending,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        api_key_id: str | None = None,
    ) -> int:
        """End every tracked turn matching all the ids given (at least one); how many were ended."""
        wanted = {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "session_id": session_id,
            "api_key_id": api_key_id,
        }
        given = {name: str(value) for name, value in wanted.items() if value is not None}
        if not given:
            raise ValueError("say whose streams to end: a tenant, user, session or API key id")
        for principal in [p for p in self._live if all(getattr(p, n) == v for n, v in given.items())]:
            del self._live[principal]
        ended = 0
        for stream in list(self._streams):
            if stream.ending is None and all(
                getattr(stream.principal, name) == value for name, value in given.items()
            ):
                stream.end(ending)
                ended += 1
        return ended


def open_streams(app: Quart | None = None) -> OpenStreams:
    """The registry of ``app`` (default: the current app), made on first use."""
    extras = gateway_state(app).extras
    found = extras.get(EXTRAS_KEY)
    if not isinstance(found, OpenStreams):
        found = OpenStreams()
        extras[EXTRAS_KEY] = found
    return found


def end_key_streams(api_key_id: str, app: Quart | None = None) -> int:
    """End the turns running on API key ``api_key_id`` (just revoked): ``api_key_revoked``."""
    return open_streams(app).end(Ending(API_KEY_REVOKED, API_KEY_REVOKED_MESSAGE), api_key_id=api_key_id)


def end_session_streams(session_ids: Iterable[str], app: Quart | None = None) -> int:
    """End the turns running on the sign-in sessions ``session_ids`` (just ended): ``session_ended``."""
    streams = open_streams(app)
    ending = Ending(SESSION_ENDED, SESSION_ENDED_MESSAGE)
    return sum(streams.end(ending, session_id=session_id) for session_id in session_ids)


def end_user_streams(user_id: str, *, deleted: bool = False, app: Quart | None = None) -> int:
    """End every turn of user ``user_id`` (just disabled or deleted): ``account_disabled``."""
    message = ACCOUNT_DELETED_MESSAGE if deleted else ACCOUNT_DISABLED_MESSAGE
    return open_streams(app).end(Ending(ACCOUNT_DISABLED, message), user_id=user_id)
