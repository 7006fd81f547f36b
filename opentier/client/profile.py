"""Where a client finds its gateway and credential: flags, then the environment, then a config file.

``opentier remote login`` writes the file (``~/.config/opentier/remote.toml``, or
``$XDG_CONFIG_HOME/opentier/remote.toml``, or ``$OPENTIER_REMOTE_CONFIG``) with mode 0600, in a folder
only its owner can enter; it holds the gateway URL and an API key::

    url = "https://opentier.example.org"
    api_key = "otk_..."
    api_key_id = "..."        # so that `opentier remote logout` can revoke it
    email = "ada@example.org"
    tenant = "default"

>>> connection = resolve()                   # OPENTIER_URL / OPENTIER_API_KEY win over the file
>>> client = Client(connection.url, api_key=connection.api_key)
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

URL_ENV = "OPENTIER_URL"
API_KEY_ENV = "OPENTIER_API_KEY"
PATH_ENV = "OPENTIER_REMOTE_CONFIG"
FILE_MODE = 0o600
FOLDER_MODE = 0o700


class ProfileError(Exception):
    """The config file cannot be read, or no gateway or credential was found anywhere."""


@dataclass(frozen=True)
class Profile:
    """The contents of the config file (every key optional)."""

    url: str | None = None
    api_key: str | None = None
    api_key_id: str | None = None
    email: str | None = None
    tenant: str | None = None

    def __repr__(self) -> str:  # never print the key
        return f"Profile(url={self.url!r}, api_key={'…' if self.api_key else None}, email={self.email!r})"


@dataclass(frozen=True)
class Connection:
    """A gateway URL and the API key to use, with where each came from (``flag``, ``environment``,
    ``file``)."""

    url: str
    api_key: str
    url_from: str
    api_key_from: str

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, api_key='…' from {self.api_key_from})"


def default_path() -> Path:
    """``$OPENTIER_REMOTE_CONFIG``, else ``$XDG_CONFIG_HOME/opentier/remote.toml``, else
    ``~/.config/opentier/remote.toml``."""
    explicit = os.environ.get(PATH_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "opentier" / "remote.toml"


def load(path: Path | None = None) -> Profile:
    """The profile in ``path`` (default :func:`default_path`); an empty one when there is no file."""
    path = path or default_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Profile()
    except OSError as err:
        raise ProfileError(f"cannot read {path}: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProfileError(f"{path} is not valid TOML: {err}") from None
    known = {field.name for field in fields(Profile)}
    return Profile(**{key: str(value) for key, value in data.items() if key in known and value})


def too_open(path: Path | None = None) -> bool:
    """The file is readable or writable by others than its owner (it holds a secret)."""
    path = path or default_path()
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def save(profile: Profile, path: Path | None = None) -> Path:
    """Write the profile, readable by its owner only (mode 0600, written whole, then renamed)."""
    path = path or default_path()
    if not path.parent.exists():
        path.parent.mkdir(mode=FOLDER_MODE, parents=True)
    lines = ["# Written by `opentier remote login`. It holds a secret: keep it private (mode 0600)."]
    for field in fields(Profile):
        value = getattr(profile, field.name)
        if value:
            # A JSON string (ASCII, escaped) is a valid TOML basic string.
            lines.append(f"{field.name} = {json.dumps(value)}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.chmod(temporary, FILE_MODE)  # the umask may have taken bits away, never added: be exact
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path


def delete(path: Path | None = None) -> bool:
    """Remove the file; False when there was none."""
    path = path or default_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(url: str | None = None, api_key: str | None = None, *, path: Path | None = None) -> Connection:
    """The gateway and the API key: the arguments (flags), then ``OPENTIER_URL`` and
    ``OPENTIER_API_KEY``, then the config file. Raises :class:`ProfileError` saying what to do when
    either is missing."""
    stored: Profile | None = None

    def from_file() -> Profile:
        nonlocal stored
        if stored is None:
            stored = load(path)
        return stored

    chosen_url, url_from = _first(
        (url, "flag"), (os.environ.get(URL_ENV), "environment"), (lambda: from_file().url, "file")
    )
    if chosen_url is None:
        raise ProfileError(
            f"no gateway URL: pass --url, set {URL_ENV}, or run `opentier remote login --url URL`"
        )
    chosen_key, key_from = _first(
        (api_key, "flag"),
        (os.environ.get(API_KEY_ENV), "environment"),
        # A key saved for another gateway is not sent to this one.
        (lambda: from_file().api_key if _same(from_file().url, chosen_url) else None, "file"),
    )
    if chosen_key is None:
        raise ProfileError(
            f"not signed in to {chosen_url}: run `opentier remote login`, pass --api-key or set {API_KEY_ENV}"
        )
    return Connection(chosen_url.rstrip("/"), chosen_key, url_from, key_from)


def _same(stored: str | None, chosen: str) -> bool:
    return stored is None or stored.rstrip("/") == chosen.rstrip("/")


def _first(*candidates: tuple[object, str]) -> tuple[str | None, str]:
    for value, origin in candidates:
        found = value() if callable(value) else value
        if isinstance(found, str) and found.strip():
            return found.strip(), origin
    return None, ""
