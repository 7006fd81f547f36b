"""The child processes of ``opentier up``: started in order, each waited for until ready, restarted with
capped exponential backoff when it dies, stopped in the reverse order.

Each child runs in a session (process group) of its own, so that the Ctrl-C a terminal sends to its
foreground group reaches the supervisor alone, which then stops the children one after the other (the
gateway before the host it talks to). On Linux a child is also sent SIGTERM should the supervisor die
without stopping it (``PR_SET_PDEATHSIG``). The children's output is copied, line by line and prefixed
with their name, to the supervisor's standard error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentier.errors import OpenTierError

#: A readiness probe: True once the child can do its work. Exceptions count as "not yet".
Probe = Callable[[], Awaitable[bool]]
Log = Callable[[str], None]

PROBE_INTERVAL_SECONDS = 0.25
#: How long the output of a child that ended may still be copied (something it started may hold the pipe).
OUTPUT_DRAIN_SECONDS = 2.0
#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


class ChildFailedError(OpenTierError):
    """A child process kept dying (or never became ready), so the supervisor stopped everything."""

    code = "child_failed"
    grpc_status = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a dead child is started again, and when the supervisor gives up."""

    #: Wait before the first restart; doubled for each further failure within the window.
    initial_delay: float = 0.5
    #: Longest wait between two starts.
    max_delay: float = 30.0
    #: This many exits within ``window_seconds`` (the last one included) and the supervisor gives up.
    max_failures: int = 5
    window_seconds: float = 60.0

    def delay(self, recent_failures: int) -> float:
        """The wait before the next start, after ``recent_failures`` failures within the window."""
        exponent = max(recent_failures - 1, 0)
        return min(self.max_delay, self.initial_delay * 2.0 ** min(exponent, 32))


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run one child."""

    name: str
    argv: Sequence[str]
    ready: Probe
    env: Mapping[str, str] = field(default_factory=dict)
    #: How long the child may take to become ready at its first start (a restarted one that takes
    #: longer is reported, and waited for).
    ready_timeout: float = 120.0
    #: After SIGTERM, how long the child may take to exit before SIGKILL.
    stop_timeout: float = 15.0


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``: why a child ended."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Running:
    """One process of a child: its transport, and whether it exited and its output pipe closed (a
    process it started may hold the pipe after it exited)."""

    def __init__(self) -> None:
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self.transport: asyncio.SubprocessTransport | None = None

    @property
    def pid(self) -> int:
        assert self.transport is not None
        pid: int = self.transport.get_pid()
        return pid

    @property
    def returncode(self) -> int | None:
        assert self.transport is not None
        code: int | None = self.transport.get_returncode()
        return code


class _Protocol(asyncio.SubprocessProtocol):
    """Copies the child's output, line by line and prefixed, as it arrives (a child never blocks on a
    full pipe); reports its exit and the end of its pipes."""

    def __init__(self, name: str, running: Running) -> None:
        self.prefix = f"{name} | ".encode()
        self.running = running
        self.pending = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        _write_lines(self.prefix, lines)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self.pending:
            _write_lines(self.prefix, [self.pending])
            self.pending = b""

    def process_exited(self) -> None:
        self.running.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.running.closed.set()


class Child:
    """One supervised process: (re)started by its watch task until :meth:`stop`."""

    def __init__(self, spec: ChildSpec, policy: RestartPolicy, log: Log, failed: asyncio.Event) -> None:
        self.spec = spec
        self.policy = policy
        self.log = log
        #: The current (or last) process.
        self.process: Running | None = None
        #: Set while the current process has answered its readiness probe.
        self.ready = asyncio.Event()
        self.starts = 0
        #: Why the supervisor gave up on this child; set together with the shared ``failed`` event.
        self.failure: str | None = None
        self._failed = failed
        self._failures: collections.deque[float] = collections.deque()
        self._watch: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        """Start the process and keep it running (in the background) until :meth:`stop`."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._supervise(), name=f"supervise {self.name}")

    async def _supervise(self) -> None:
        while True:
            started = time.monotonic()
            process = await self._spawn()
            probing = asyncio.create_task(self._probe(process), name=f"probe {self.name}")
            try:
                await process.exited.wait()
            finally:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing
            self.ready.clear()
            _signal_group(process.pid, signal.SIGKILL)  # what it started, before a new one starts
            await _release(process)
            returncode = process.returncode
            assert returncode is not None
            ran = time.monotonic() - started
            now = time.monotonic()
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.policy.window_seconds:
                self._failures.popleft()
            recent = len(self._failures)
            reason = f"{self.name} exited ({describe_exit(returncode)}) after {ran:.1f} s"
            if recent >= self.policy.max_failures:
                self.failure = (
                    f"{reason}: {recent} failures within {self.policy.window_seconds:g} s, so OpenTier "
                    f"gives up; the {self.name}'s output above says why"
                )
                self.log(self.failure)
                self._failed.set()
                return
            wait = self.policy.delay(recent)
            self.log(
                f"{reason}; restarting it in {wait:.1f} s ({recent} failure(s) within "
                f"{self.policy.window_seconds:g} s; OpenTier gives up at {self.policy.max_failures})"
            )
            await asyncio.sleep(wait)

    async def _spawn(self) -> Running:
        self.starts += 1
        running = Running()
        loop = asyncio.get_running_loop()
        spawning = asyncio.ensure_future(
            loop.subprocess_exec(
                lambda: _Protocol(self.name, running),
                *_dying_with_this_process(self.spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**self.spec.env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        )
        try:
            transport, _ = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Stopped while starting: the process may exist all the same, and stop() must find it.
            await asyncio.wait({spawning})
            if not spawning.cancelled() and spawning.exception() is None:
                running.transport = spawning.result()[0]
                self.process = running
            raise
        running.transport = transport
        self.process = running
        return running

    async def _probe(self, process: Running) -> None:
        """Ask the probe until it says ready; say so when that takes longer than ``ready_timeout``."""
        deadline = time.monotonic() + self.spec.ready_timeout
        while not process.exited.is_set():
            if time.monotonic() > deadline and self.starts > 1:
                self.log(
                    f"{self.name} (pid {process.pid}) is not ready after {self.spec.ready_timeout:g} s; "
                    "still waiting for it"
                )
                deadline = float("inf")
            try:
                ready = await self.spec.ready()
            except Exception:
                ready = False  # a child that cannot be reached yet is not ready yet
            if ready:
                if self.starts > 1:
                    self.log(f"{self.name} is ready again (pid {process.pid}, start {self.starts})")
                self.ready.set()
                return
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)

    async def stop(self, hurry: asyncio.Event) -> None:
        """Stop restarting, then SIGTERM the process group and wait; SIGKILL after ``stop_timeout`` or
        once ``hurry`` is set."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process = self.process
        if process is None:
            return
        if process.exited.is_set():
            await _release(process)
            return
        self.log(f"stopping the {self.name} (pid {process.pid})")
        _signal_group(process.pid, signal.SIGTERM)
        exited = asyncio.ensure_future(process.exited.wait())
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            await asyncio.wait(
                {exited, hurried}, timeout=self.spec.stop_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hurried.cancel()
        if not exited.done():
            self.log(f"the {self.name} did not stop in time; killing it")
            _signal_group(process.pid, signal.SIGKILL)
        await exited
        # Whatever the child left in its process group (a worker process of a plugin) goes with it.
        _signal_group(process.pid, signal.SIGKILL)
        await _release(process)
        returncode = process.returncode
        assert returncode is not None
        self.log(f"{self.name} stopped ({describe_exit(returncode)})")


async def _release(process: Running) -> None:
    """Let the output of an ended process be copied to its end, then free its pipes (without waiting
    long for a process that it started outside its process group and that still holds them)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.closed.wait(), OUTPUT_DRAIN_SECONDS)
    if process.transport is not None:
        process.transport.close()


class Supervisor:
    """Children started one after the other (each ready before the next starts), stopped in reverse."""

    def __init__(self, policy: RestartPolicy | None = None, *, log: Log) -> None:
        self.policy = policy or RestartPolicy()
        self.log = log
        self.children: list[Child] = []
        #: Set when a child failed too often; :meth:`wait` then raises.
        self.failed = asyncio.Event()
        #: Set to cut the graceful stop short (a second Ctrl-C): children still running are killed.
        self.hurry = asyncio.Event()

    async def start(self, spec: ChildSpec) -> Child:
        """Start ``spec`` and return once it is ready; ChildFailedError when it gave up first."""
        child = Child(spec, self.policy, self.log, self.failed)
        self.children.append(child)
        child.start()
        ready = asyncio.ensure_future(child.ready.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait(
                {ready, failed}, timeout=spec.ready_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            failed.cancel()
        self._raise_failure()
        if not child.ready.is_set():
            raise ChildFailedError(
                f"the {spec.name} did not become ready within {spec.ready_timeout:g} s; "
                f"its output above says why"
            )
        return child

    async def wait(self) -> None:
        """Supervise until a child fails too often (ChildFailedError); cancel the caller to stop."""
        await self.failed.wait()
        self._raise_failure()

    async def stop(self) -> None:
        """Stop every child, the last started first; idempotent."""
        while self.children:
            await self.children.pop().stop(self.hurry)

    def _raise_failure(self) -> None:
        for child in self.children:
            if child.failure is not None:
                raise ChildFailedError(child.failure)


def _write_lines(prefix: bytes, lines: list[bytes]) -> None:
    text = b"".join(prefix + line.rstrip(b"\r") + b"\n" for line in lines)
    try:
        sys.stderr.buffer.write(text)
        sys.stderr.buffer.flush()
    except (OSError, ValueError):
        pass  # nowhere to show it (the terminal went away); the child must not block regardless


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _dying_with_this_process(argv: Sequence[str]) -> list[str]:
    """``argv``, run through a few lines of Python that have Linux send it SIGTERM when this process dies
    (``PR_SET_PDEATHSIG`` is kept across ``execv``); ``argv`` unchanged elsewhere.

    Not a ``preexec_fn``: with one, the fork runs gRPC's fork handlers (the supervisor holds gRPC channels
    for its probes), which now and then abort the child before it could exec.
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _PDEATHSIG_EXEC, str(os.getpid()), *argv]


_PDEATHSIG_EXEC = f"""\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, int(signal.SIGTERM))
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the supervisor died before the call above
os.execvp(sys.argv[2], sys.argv[2:])
"""
