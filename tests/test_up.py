"""The README's run command, end to end: `opentier up` (what `scripts/run` execs after its bootstrap) in a
fresh data folder brings up PostgreSQL, the host and the gateway as supervised children, prints the first
admin's credentials once, answers a question from an uploaded document with a citation, restarts a child
killed with SIGKILL, resumes on the same folder without a second admin, gives up on a child that keeps
failing, and one Ctrl-C (SIGINT to the process group, as a terminal sends it) stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil
import pytest

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("OPENTIER_TEST_DATABASE_URL")),
    reason="exercises the embedded PostgreSQL; an external test database is configured",
)

REPO = Path(__file__).resolve().parent.parent
#: `.venv/bin/opentier` of the virtual environment running the tests (what scripts/run execs).
OPENTIER = Path(sys.executable).with_name("opentier")
RUN_LINE = 'exec .venv/bin/opentier up "$@"'

GLIDERS = (
    "# Gliders\n\n"
    "A glider stays aloft by circling in thermals, columns of warm rising air. "
    "The best glide ratio of a modern open-class glider is about seventy to one.\n\n"
    "# Landing\n\n"
    "Before landing, the pilot extends the airbrakes to steepen the approach.\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(process)
    return found


def still_running(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


class Up:
    """`opentier up` as scripts/run runs it (from the repository, in a process group of its own, like a
    terminal's foreground job), with free ports and a fresh data folder; its output read by a thread."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        host_port: int | None = None,
        command: Path = OPENTIER,
    ) -> None:
        self.state = tmp_path / "state"
        self.gateway_port = free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
        environment.update(
            {
                "OPENTIER_DATA_DIR": str(self.state),
                "OPENTIER_HOST__PORT": str(host_port or free_port()),
                "OPENTIER_GATEWAY__PORT": str(self.gateway_port),
                **(env or {}),
            }
        )
        # scripts/run itself: its bootstrap finds the environment installed, then it execs `opentier up`.
        argv = [str(command), *args] if command.name == "run" else [str(command), "up", *args]
        #: What a user's shell has beside `opentier up`: the local commands reach the same platform.
        self.environment = environment
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            cwd=REPO,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._next = 0
        self._changed = threading.Condition()
        self._ended = False
        self._seen: list[psutil.Process] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The next output line matching ``pattern`` (lines before it are passed over)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                while self._next < len(self.lines):
                    line = self.lines[self._next]
                    self._next += 1
                    match = re.search(pattern, line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def descendants(self) -> list[psutil.Process]:
        found = psutil.Process(self.process.pid).children(recursive=True)
        self._seen.extend(found)
        return found

    def child(self, command: str) -> psutil.Process:
        """The running child whose command line ends in ``command`` (`host serve`, `gateway serve`)."""
        [found] = [p for p in self.descendants() if command in " ".join(p.cmdline())]
        return found

    def stop(self, signum: signal.Signals, *, group: bool = True) -> int:
        if group:
            os.killpg(self.process.pid, signum)
        else:
            os.kill(self.process.pid, signum)
        return self.process.wait(timeout=90)

    def __enter__(self) -> Up:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:  # the test failed: leave nothing behind
            self.descendants()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            for process in self._seen + postgres_processes(self.state.resolve()):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.terminate()


def first_credentials(up: Up) -> tuple[str, str, str]:
    up.expect(r"^first run: created the admin of tenant 'default' and an API key, shown this once", 180)
    email = up.expect(r"^  email:\s+(\S+)$").group(1)
    password = up.expect(r"^  password:\s+(.+)$").group(1)
    key = up.expect(r"^  API key:\s+(otk_\S+)$").group(1)
    return email, password, key


def sign_in(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    login = http.post("/v1/auth/login", json={"tenant": "default", "email": email, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def ready_within(http: httpx.Client, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if http.get("/readyz").status_code == 200:
            return True
        time.sleep(0.2)
    return False


def nothing_left(up: Up, children: list[psutil.Process]) -> None:
    assert still_running(children) == [], "a child outlived `opentier up`"
    data_dir = (up.state / "postgres").resolve()
    deadline = time.monotonic() + 10
    while postgres_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postgres_processes(data_dir) == [], "PostgreSQL outlived `opentier up`"


def test_run_command_first_run_signs_in_ingests_answers_with_a_citation_and_ctrl_c_stops_all(
    tmp_path: Path,
) -> None:
    assert (REPO / "scripts" / "run").read_text().rstrip().endswith(RUN_LINE), "the README's command changed"
    with Up(tmp_path, command=REPO / "scripts" / "run") as up:
        email, password, key = first_credentials(up)
        up.expect(r"^OpenTier is up: http://127\.0\.0\.1:\d+$", 60)
        children = up.descendants()
        commands = [" ".join(p.cmdline()) for p in children]
        assert any("host serve" in c for c in commands), commands
        assert any("gateway serve" in c for c in commands), commands
        assert postgres_processes((up.state / "postgres").resolve()), "the embedded PostgreSQL is not running"

        with httpx.Client(base_url=up.url, timeout=30) as http:
            assert http.get("/readyz").status_code == 200
            me = http.get("/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
            assert me.status_code == 200, me.text
            assert me.json()["user"]["email"] == email and me.json()["user"]["role"] == "admin"
            assert me.json()["scopes"] == ["admin", "chat", "ingest", "read"]
            auth = sign_in(http, email, password)
            created = http.post("/v1/collections", json={"name": "gliders"}, headers=auth)
            assert created.status_code == 201, created.text
            collection = created.json()["id"]
            upload = http.post(
                f"/v1/collections/{collection}/documents",
                files={"file": ("gliders.md", GLIDERS.encode(), "text/markdown")},
                headers=auth,
            )
            assert upload.status_code == 202, upload.text
            job_id = upload.json()["job"]["id"]
            deadline = time.monotonic() + 60
            while not (job := http.get(f"/v1/jobs/{job_id}", headers=auth).json())["finished"]:
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job["status"] == "succeeded", job

            question = {"message": "What is the glide ratio of a glider?", "collection_ids": [collection]}
            with http.stream("POST", "/v1/chat/stream", json=question, headers=auth) as response:
                assert response.status_code == 200, response.read()
                events = list(sse_events(response))
        answer = "".join(e["text"] for e in events if e["type"] == "token")
        citations = [e for e in events if e["type"] == "citation"]
        assert "seventy to one" in answer, events
        assert re.search(r"\[1\]", answer), answer
        assert [c["source"] for c in citations] == ["gliders.md"]
        assert events[-1]["type"] == "done" and events[-1]["status"] == "complete"

        # The README's next commands (`opentier collections`, `opentier search`) act for the same
        # tenant as the gateway's admin: they see the collection made through the API.
        local = subprocess.run(
            [str(OPENTIER), "search", "glide ratio", "--collection", "gliders", "--json"],
            env=up.environment | {"COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert local.returncode == 0 and "gliders.md" in local.stdout, local.stdout + local.stderr

        assert up.stop(signal.SIGINT) == 0  # what Ctrl-C does
        nothing_left(up, children)

    output = up.output
    order = [output.index(f"stopping the {what}") for what in ("gateway", "host", "embedded PostgreSQL")]
    assert order == sorted(order), "not stopped gateway first, then host, then PostgreSQL"
    assert (up.state / "jwt.secret").stat().st_mode & 0o077 == 0, "the token-signing secret is private"
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            assert key.encode() not in content, f"the API key is written in {path}"
            assert password.encode() not in content, f"the admin password is written in {path}"


def test_a_killed_child_is_restarted_and_a_second_run_resumes_with_the_same_admin(tmp_path: Path) -> None:
    admin = {"OPENTIER_ADMIN_EMAIL": "ada@example.org", "OPENTIER_ADMIN_PASSWORD": "a long enough password"}
    with Up(tmp_path, "--demo", env=admin) as up:
        up.expect(r"^first run: created the admin", 180)
        up.expect(r"^  email:\s+ada@example\.org$")
        up.expect(r"^  password:\s+\(from OPENTIER_ADMIN_PASSWORD\)$")
        key = up.expect(r"^  API key:\s+(otk_\S+)$").group(1)
        up.expect(r"^demo: collection 'demo' \(id \S+\) holds 4 pages \(4 new, 0 unchanged, 0 failed\)")
        up.expect(r"^OpenTier is up")
        children = up.descendants()
        for child in children:
            assert "OPENTIER_ADMIN_PASSWORD" not in child.environ(), "a child got the admin password"

        with httpx.Client(base_url=up.url, timeout=30) as http:
            question = {"model": "demo", "messages": [{"role": "user", "content": "How do I stop OpenTier?"}]}
            completion = http.post(
                "/v1/chat/completions", json=question, headers={"Authorization": f"Bearer {key}"}
            )
            assert completion.status_code == 200, completion.text
            message = completion.json()["choices"][0]["message"]
            assert "Ctrl-C" in message["content"], message
            assert message["citations"] and message["citations"][0]["source"].startswith("opentier-demo/")

            for command in ("host serve", "gateway serve"):
                name = command.split()[0]
                killed = up.child(command)
                killed.kill()
                up.expect(
                    rf"^{name} exited \(killed by SIGKILL\) after [\d.]+ s; restarting it in 0\.5 s", 30
                )
                up.expect(rf"^{name} is ready again \(pid \d+, start 2\)", 60)
                # The gateway's channels reconnect to a restarted host within their backoff (2 s at most).
                assert ready_within(http, 15), f"the gateway is not ready again after the {name} restarted"
                assert up.child(command).pid != killed.pid

        children = up.descendants()
        assert up.stop(signal.SIGTERM, group=False) == 0  # as systemd or `kill` would
        nothing_left(up, children)

    with Up(tmp_path, "--demo") as again:
        again.expect(r"^admin: ada@example\.org of tenant 'default' exists$", 180)
        again.expect(r"holds 4 pages \(0 new, 4 unchanged, 0 failed\)")
        again.expect(r"^OpenTier is up")
        with httpx.Client(base_url=again.url, timeout=30) as http:
            auth = sign_in(http, "ada@example.org", "a long enough password")
            users = http.get("/v1/users", headers=auth)
            assert users.status_code == 200, users.text
            assert [u["email"] for u in users.json()["users"]] == ["ada@example.org"]
            assert http.get("/v1/auth/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        children = again.descendants()
        assert again.stop(signal.SIGINT) == 0
        nothing_left(again, children)
    assert "first run" not in again.output and "API key:" not in again.output


def test_a_child_that_keeps_failing_stops_everything_with_an_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with Up(tmp_path, host_port=port) as up:
            assert up.process.wait(timeout=120) == 2
            up.expect(r"^host exited \(exit code \d+\) after [\d.]+ s; restarting it in 0\.5 s")
            up.expect(r"^host exited \(exit code \d+\) after [\d.]+ s; restarting it in 1\.0 s")
            up.expect(r"^error \[child_failed\]: host exited \(exit code \d+\) .*5 failures within 60 s")
            nothing_left(up, [])
    hosts = [
        p
        for p in psutil.process_iter(["cmdline"])
        if f"serve --port {port}" in " ".join(p.info["cmdline"] or [])
    ]
    assert hosts == [], "a host outlived `opentier up`"
    assert not any(line.startswith("gateway |") for line in up.lines), "the gateway started without a host"


def test_admin_credentials_the_first_run_would_refuse_are_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    with Up(tmp_path, env={"OPENTIER_ADMIN_PASSWORD": "too short"}) as up:
        assert up.process.wait(timeout=60) == 2
        up.expect(r"^error \[config_invalid\]: OPENTIER_ADMIN_PASSWORD: password: at least 12 characters")
    assert not up.state.exists(), "something started"
