"""Database failures that are not bugs: PostgreSQL unreachable (stopped, restarting, connection lost), and
text PostgreSQL cannot store (a NUL character). The host and the gateway turn them into
``database_error`` (503, retryable) and ``invalid_request`` (400) instead of an internal error."""

from __future__ import annotations

import traceback

import asyncpg
from sqlalchemy.exc import DBAPIError

from opentier.errors import DatabaseError, InvalidRequestError, OpenTierError

#: SQLSTATEs of text the database refuses: NUL in text/jsonb (22P05), invalid byte sequence (22021).
_UNSTORABLE_TEXT = frozenset({"22P05", "22021"})
_UNREACHABLE = (
    ConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
)


def _connecting(err: BaseException) -> bool:
    """Whether ``err`` is an OS error of the database driver connecting (socket gone, port closed)."""
    if not isinstance(err, OSError):
        return False
    return any("asyncpg" in frame.f_code.co_filename for frame, _ in traceback.walk_tb(err.__traceback__))


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def database_fault(err: BaseException) -> OpenTierError | None:
    """The error a caller should get for ``err`` when it is one of the failures above, else ``None``."""
    chain = _chain(err)
    for cause in chain:
        if isinstance(cause, asyncpg.PostgresError) and cause.sqlstate in _UNSTORABLE_TEXT:
            return InvalidRequestError(
                "invalid request: the text holds a character that cannot be stored (NUL)"
            )
    for cause in chain:
        if (
            (isinstance(cause, DBAPIError) and cause.connection_invalidated)
            or isinstance(cause, _UNREACHABLE)
            or _connecting(cause)
        ):
            return DatabaseError("the database is unavailable (restarting or unreachable); try again shortly")
    return None
