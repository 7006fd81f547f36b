"""The ``limits`` storage behind the rate limits and the login throttle: in memory by default, shared in
Redis (``redis://host:6379``, with the ``redis`` client of ``pip install 'opentier[redis]'``) when several
gateways run."""

from __future__ import annotations

from limits.aio.storage import Storage
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from opentier.errors import ConfigError

#: URI schemes served by the Redis storages (``redis+sentinel``, ``redis+cluster`` included).
REDIS_SCHEMES = frozenset({"redis", "rediss"})


def async_storage_uri(uri: str) -> str:
    """The asyncio flavour of a ``limits`` storage URI (``memory://`` → ``async+memory://``)."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def open_storage(uri: str, setting: str) -> Storage:
    """An asyncio ``limits`` storage for ``uri`` (the value of ``setting``, named in errors).

    Storage errors are wrapped (:class:`limits.errors.StorageError`) so that callers can tell them apart.
    """
    full = async_storage_uri(uri)
    scheme = full.split("://", 1)[0].split("+")
    options: dict[str, str | bool] = {"wrap_exceptions": True}
    if len(scheme) > 1 and scheme[1] in REDIS_SCHEMES:
        options["implementation"] = "redispy"
    try:
        storage = storage_from_string(full, **options)
    except (ConfigurationError, ValueError) as err:
        raise ConfigError(
            f"{setting} cannot be used: {err} (for Redis: pip install 'opentier[redis]')"
        ) from None
    if not isinstance(storage, Storage):
        raise ConfigError(f"{setting} names a storage without an asyncio implementation")
    return storage
