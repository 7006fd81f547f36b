"""The whole OpenTier stack on loopback, for the gateway benchmarks (bench/gateway_stream.py,
bench/ws_concurrency.py): PostgreSQL, the intelligence host and the gateway as separate processes.

:class:`Stack` does what a person following docs/getting-started.md would, with the real commands:
``opentier db start --migrate`` (the embedded PostgreSQL in a scratch data folder under /tmp, or the
server of ``OPENTIER_BENCH_DATABASE_URL``), the host, ``opentier gateway serve``, ``opentier gateway
create-admin``; then, through the REST API, a sign-in, an API key (scopes read, ingest, chat), a
collection and a small generated document set ingested by the host's real pipeline. Everything is
configured through ``OPENTIER_*`` environment variables of the child processes; the bench's own
``OPENTIER_*`` variables are not passed on.

The host is ``opentier host serve``, or, when a paced model is asked for, this module run as a script
(``python bench/stack.py host``): the same :class:`~opentier.host.server.HostServer` that command
builds, with one more plugin registered the way tests inject theirs (``load_plugins(extra=...)``),
:class:`PacedLLM`. That keeps the host a process of its own, as in production, without installing a
bench-only distribution (an entry point) into the environment.

``OPENTIER_BENCH_KEEP=1`` keeps the scratch folder (``host.log``, ``gateway.log``) for a post-mortem.

The gateway's request rate limits are switched off (``limits.per_*`` empty): every benchmark client
comes from 127.0.0.1 with one key, which the defaults would rightly throttle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
from sqlalchemy.engine import make_url

from opentier import hookimpl
from opentier.components import LLM, LLMEvent, LLMRequest, TextDelta, Usage

#: The plugins the benchmark host loads (the defaults of ingestion, retrieval and chat).
PLUGINS = (
    "text", "records", "basic-cleaners", "layout-cleaners", "minilm", "vector", "fulltext", "hybrid",
    "extractive",
)  # fmt: skip
ADMIN_EMAIL = "admin@bench.example.org"
TENANT = "bench"
READY_TIMEOUT = 120.0
#: Set (to anything) to keep the scratch folder, with the host's and the gateway's logs, at the end.
KEEP_ENV = "OPENTIER_BENCH_KEEP"

# -- the paced model --------------------------------------------------------------------------------------


class PacedLLM(LLM):
    """A fixed-rate model: first text after ``first_token`` seconds, then ``rate`` words per second,
    ``tokens`` words, one per delta, every tenth citing source [1]."""

    name = "paced"
    context_window = 8192

    def __init__(self, tokens: int, rate: float, first_token: float) -> None:
        self.tokens, self.rate, self.first_token = tokens, rate, first_token

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        began = time.perf_counter()
        cite = bool(request.sources)
        for index in range(self.tokens):
            due = began + self.first_token + index / self.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            yield TextDelta("word[1] " if cite and index % 10 == 9 else "word ")
        yield Usage(
            input_tokens=sum(self.count_tokens(m.content) for m in request.messages),
            output_tokens=self.tokens,
        )


def paced_plugin(llm: PacedLLM) -> object:
    @hookimpl
    def register_llms(register: Callable[[LLM], None]) -> None:
        register(llm)

    return SimpleNamespace(register_llms=register_llms)


def host_main(argv: list[str]) -> None:
    """``python bench/stack.py host``: ``opentier host serve`` plus the paced model (settings from the
    environment, stopped by SIGTERM or SIGINT)."""
    parser = argparse.ArgumentParser(prog="bench/stack.py host", description=host_main.__doc__)
    parser.add_argument("--paced-tokens", type=int, default=100)
    parser.add_argument("--paced-rate", type=float, default=200.0)
    parser.add_argument("--paced-first-token-ms", type=float, default=50.0)
    args = parser.parse_args(argv)

    from opentier.cli.host_cmd import install_host_tracing, run, serve_until_signal
    from opentier.config import load_settings
    from opentier.host.runtime import HostRuntime, require_embedded_running
    from opentier.host.server import HostServer
    from opentier.host.token import resolve_host_token
    from opentier.plugin_manager import load_plugins

    settings = load_settings(None)
    require_embedded_running(settings)
    llm = PacedLLM(args.paced_tokens, args.paced_rate, args.paced_first_token_ms / 1000)
    plugins = load_plugins(settings, extra=[("bench-paced", paced_plugin(llm))])
    for failure in plugins.failures:
        print(f"warning: plugin {failure.name} did not load: {failure.error}", file=sys.stderr)
    token = resolve_host_token(settings)
    install_host_tracing(settings)

    async def serve() -> None:
        server = HostServer(settings, plugins, token, runtime=HostRuntime(settings, plugins.registry))
        await server.start()
        print(f"bench host serving on {server.target}", file=sys.stderr, flush=True)
        await serve_until_signal(server)

    run(serve())


# -- the generated documents ----------------------------------------------------------------------------

_PARTS = (
    "feed pump", "steam valve", "condenser", "gearbox", "cooling fan", "boiler", "air filter",
    "compressor", "turbine rotor", "pressure sensor", "oil cooler", "exhaust damper",
)  # fmt: skip
_CAUSES = (
    "the inlet pressure drops", "the oil gets too hot", "the load changes quickly", "the water level falls",
    "a bearing wears out", "the power supply fails", "dust blocks the intake", "the speed runs too high",
)  # fmt: skip
_ACTIONS = (
    "closes within two seconds", "raises an alarm in the control room", "switches to the spare unit",
    "slows down to half speed", "opens the bypass line", "stops and waits for a manual restart",
    "logs the event and keeps running", "vents the extra pressure to the stack",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Corpus:
    """Documents ``(file name, text)`` about made-up plants, and questions that they answer."""

    documents: list[tuple[str, str]]
    questions: list[str]


def corpus(documents: int = 12, seed: int = 7) -> Corpus:
    """``documents`` texts of about 40 sentences each, and one question per (plant, part) fact."""
    rng = random.Random(seed)
    docs: list[tuple[str, str]] = []
    questions: list[str] = []
    for number in range(1, documents + 1):
        plant = f"plant {number}"
        paragraphs = [f"Operating notes of {plant}."]
        for part in rng.sample(_PARTS, 8):
            cause, action, other = rng.choice(_CAUSES), rng.choice(_ACTIONS), rng.choice(_ACTIONS)
            hours = rng.randrange(200, 5000, 50)
            paragraphs.append(
                f"The {part} of {plant}. When {cause}, the {part} of {plant} {action}. "
                f"Operators of {plant} check the {part} every {hours} hours. "
                f"If the check fails twice, the {part} {other}. "
                f"The {part} was last replaced in {rng.randrange(2001, 2024)}."
            )
            questions.append(f"What does the {part} of {plant} do when {cause}?")
        docs.append((f"plant-{number:02d}.txt", "\n\n".join(paragraphs) + "\n"))
    rng.shuffle(questions)
    return Corpus(docs, questions)


# -- the processes --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def opentier_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "opentier.cli", *args]


@dataclass
class Paced:
    """The paced model's settings; a stack given one runs its host through ``bench/stack.py host``."""

    tokens: int = 100
    rate: float = 200.0
    first_token_ms: float = 50.0


@dataclass
class Account:
    """The benchmark's user: an API key with scopes read, ingest and chat, and who it is."""

    key: str
    tenant_id: str
    user_id: str
    collection_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Stack:
    """PostgreSQL, the host and the gateway, started by :meth:`start` and stopped by :meth:`stop`
    (or ``with Stack(...) as stack``). ``env`` adds settings of both processes (``OPENTIER_...``)."""

    paced: Paced | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Host processes; the gateway spreads its calls over them (``gateway.host_targets``).
    hosts: int = 1
    folder: Path = field(init=False)
    host_token: str = field(init=False)
    jwt_secret: str = field(init=False)
    host_port: int = field(init=False)
    host_ports: list[int] = field(init=False, default_factory=list)
    gateway_port: int = field(init=False)
    host: subprocess.Popen[bytes] | None = field(init=False, default=None)
    #: The hosts after the first (``hosts`` > 1), with their ports.
    more_hosts: list[tuple[int, subprocess.Popen[bytes]]] = field(init=False, default_factory=list)
    gateway: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _scratch: bool = field(init=False, default=False)
    _external_db: bool = field(init=False, default=False)

    @property
    def host_target(self) -> str:
        return f"127.0.0.1:{self.host_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}"

    @staticmethod
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def child_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("OPENTIER_")}
        env |= {
            "OPENTIER_DATA_DIR": str(self.folder / "data"),
            "OPENTIER_HOST__TOKEN": self.host_token,
            "OPENTIER_HOST__PORT": str(self.host_port),
            "OPENTIER_GATEWAY__PORT": str(self.gateway_port),
            "OPENTIER_GATEWAY__JWT_SECRET": self.jwt_secret,
            "OPENTIER_GATEWAY__HOST_TARGETS": json.dumps([f"127.0.0.1:{port}" for port in self.host_ports]),
            "OPENTIER_LIMITS__PER_API_KEY": "",
            "OPENTIER_LIMITS__PER_USER": "",
            "OPENTIER_LIMITS__PER_ADDRESS": "",
            "OPENTIER_CHAT__ALLOWED_LLMS": '["*"]',
            "OPENTIER_LOAD_PLUGINS": ",".join(PLUGINS),
        }
        external = os.environ.get("OPENTIER_BENCH_DATABASE_URL")
        if external:
            parsed = make_url(external)
            env["OPENTIER_DATABASE__URL"] = parsed._replace(password=None).render_as_string(
                hide_password=False
            )
            if parsed.password:
                env["OPENTIER_DATABASE__PASSWORD"] = str(parsed.password)
        return env | self.env

    def start(self) -> Stack:
        self.folder = Path(tempfile.mkdtemp(prefix="opentier-bench-stack-"))
        self._scratch = True
        self.host_token = secrets.token_urlsafe(32)
        self.jwt_secret = secrets.token_urlsafe(48)
        self.host_port, self.gateway_port = free_port(), free_port()
        self.host_ports = [self.host_port, *(free_port() for _ in range(self.hosts - 1))]
        self._external_db = bool(os.environ.get("OPENTIER_BENCH_DATABASE_URL"))
        try:
            self.say(f"stack: scratch folder {self.folder}")
            self._run("db", "start", "--migrate")
            if self.paced is None:
                host_args = opentier_command("host", "serve")
            else:
                p = self.paced
                host_args = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "host",
                    f"--paced-tokens={p.tokens}",
                    f"--paced-rate={p.rate}",
                    f"--paced-first-token-ms={p.first_token_ms}",
                ]
            self.host = self._spawn("host", host_args)
            for number, port in enumerate(self.host_ports[1:], start=2):
                process = self._spawn(f"host-{number}", host_args, {"OPENTIER_HOST__PORT": str(port)})
                self.more_hosts.append((port, process))
            self.gateway = self._spawn("gateway", opentier_command("gateway", "serve"))
            self._wait_ready()
            self.say(
                f"stack: host {self.host_target} (pid {self.host.pid}), "
                + "".join(f"host 127.0.0.1:{port} (pid {p.pid}), " for port, p in self.more_hosts)
                + f"gateway {self.gateway_url} (pid {self.gateway.pid})"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            opentier_command(*args),
            env=self.child_env() | (env or {}),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"opentier {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        try:
            return subprocess.Popen(
                args,
                env=self.child_env() | (env or {}),
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()  # the child holds its own descriptor

    def _parts(self) -> list[tuple[str, subprocess.Popen[bytes] | None]]:
        """The child processes by part, the gateway first (the order to stop them in)."""
        return [("gateway", self.gateway), ("host", self.host), *(("host", p) for _, p in self.more_hosts)]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.folder / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(base_url=self.gateway_url, timeout=5) as client:
            while time.monotonic() < deadline:
                for name, process in self._parts():
                    if process is not None and process.poll() is not None:
                        raise RuntimeError(
                            f"the {name} exited with {process.returncode}:\n{self.log_tail(name)}"
                        )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(
            f"the stack was not ready in {READY_TIMEOUT:.0f} s:\n{self.log_tail('host')}\n"
            f"{self.log_tail('gateway')}"
        )

    def stop(self) -> None:
        # The gateway first (it drains its streams), then the hosts, then the database.
        for name, process in self._parts():
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.say(f"stack: the {name} did not stop in 30 s; killing it")
                process.kill()
                process.wait()
        if self._scratch:
            try:
                if not self._external_db:
                    self._run("db", "stop")
            finally:
                if os.environ.get(KEEP_ENV):
                    self.say(f"stack: kept {self.folder} ({KEEP_ENV} is set): host.log, gateway.log")
                else:
                    shutil.rmtree(self.folder, ignore_errors=True)
                self._scratch = False

    # -- what runs where ---------------------------------------------------------------------------

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The processes of each part: ``gateway``, ``host``, ``postgres`` (embedded: the postmaster and
        its backends)."""
        found: dict[str, list[psutil.Process]] = {}
        for name, process in self._parts():
            if process is not None and process.poll() is None:
                found.setdefault(name, []).append(psutil.Process(process.pid))
        pid_file = self.folder / "data" / "postgres" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            found["postgres"] = [postmaster, *postmaster.children(recursive=True)]
        return found

    # -- the account and the documents -------------------------------------------------------------

    def account(self) -> Account:
        """An admin (``opentier gateway create-admin``), signed in, who makes an API key."""
        password = secrets.token_urlsafe(18)
        self._run(
            "gateway", "create-admin", "--email", ADMIN_EMAIL, "--tenant", TENANT,
            env={"OPENTIER_ADMIN_PASSWORD": password},
        )  # fmt: skip
        with httpx.Client(base_url=self.gateway_url, timeout=30) as client:
            login = _ok(
                client.post(
                    "/v1/auth/login", json={"tenant": TENANT, "email": ADMIN_EMAIL, "password": password}
                )
            )
            bearer = {"Authorization": f"Bearer {login['access_token']}"}
            key = _ok(
                client.post(
                    "/v1/keys", json={"name": "bench", "scopes": ["read", "ingest", "chat"]}, headers=bearer
                )
            )["key"]
            me = _ok(client.get("/v1/auth/me", headers={"Authorization": f"Bearer {key}"}))
        return Account(key=key, tenant_id=me["tenant"]["id"], user_id=me["user"]["id"])

    def ingest(self, account: Account, documents: list[tuple[str, str]]) -> dict[str, int]:
        """A collection with ``documents`` uploaded through the REST API; waits until every job ended
        and returns the chunk count. Sets ``account.collection_id``."""
        with httpx.Client(base_url=self.gateway_url, timeout=60, headers=account.headers) as client:
            collection = _ok(client.post("/v1/collections", json={"name": f"bench-{uuid.uuid4().hex[:8]}"}))
            account.collection_id = collection["id"]
            jobs = [
                _ok(
                    client.post(
                        f"/v1/collections/{collection['id']}/documents",
                        files={"file": (name, text.encode(), "text/plain")},
                    )
                )["job"]["id"]
                for name, text in documents
            ]
            chunks = 0
            deadline = time.monotonic() + 600
            for job_id in jobs:
                while True:
                    job = _ok(client.get(f"/v1/jobs/{job_id}"))
                    if job["finished"]:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ingestion job {job_id} did not finish: {job}")
                    time.sleep(0.1)
                if job["status"] != "succeeded":
                    raise RuntimeError(f"ingestion job {job_id} ended {job['status']}: {job}")
                chunks += job["counts"]["chunks_written"]
        return {"documents": len(documents), "chunks": chunks}


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} → {response.status_code}: {response.text}"
        )
    return json.loads(response.content)


if __name__ == "__main__":
    if sys.argv[1:2] != ["host"]:
        sys.exit("usage: python bench/stack.py host [--help]")
    host_main(sys.argv[2:])
