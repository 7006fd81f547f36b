"""The shared credential the gateway sends to the host (``authorization: Bearer <token>``).

``host.token`` (environment ``OPENTIER_HOST__TOKEN``) wins; otherwise both processes of one machine
share ``<data_dir>/host.token``, created on first use with mode 0600.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from opentier.config import Settings, env_name
from opentier.errors import ConfigError

TOKEN_FILE_NAME = "host.token"

log = logging.getLogger(__name__)


def token_path(settings: Settings) -> Path:
    """Where the generated host token lives."""
    return settings.data_dir.expanduser() / TOKEN_FILE_NAME


def resolve_host_token(settings: Settings) -> str:
    """The host token: from the settings if set, else read from (or created in) the data folder."""
    if settings.host.token is not None:
        configured = settings.host.token.get_secret_value().strip()
        if configured:
            return configured
    path = token_path(settings)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    return _create(path)


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("host token file %s had mode %o; restricting it to 0600", path, mode)
        path.chmod(0o600)
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError(
            f"host token file {path} is empty; delete it to have a new one created, or set "
            f"{env_name('host.token')}"
        )
    return token


def _create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Write a private temporary file, then link it into place: a concurrent reader never sees a
    # half-written token, and of two processes racing, exactly one token wins.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created host token file %s", path)
    return token
