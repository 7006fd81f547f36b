"""The supervisor of `opentier up` on real child processes (small Python scripts standing in for the
host and the gateway): restarts with growing delays and the reason, giving up, the stop order,
SIGKILL for a child that ignores SIGTERM, and children that do not outlive a killed supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from opentier.supervisor import ChildFailedError, ChildSpec, Probe, RestartPolicy, Supervisor

FAST = RestartPolicy(initial_delay=0.2, max_delay=0.4, max_failures=5, window_seconds=60)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def file_exists(path: Path) -> Probe:
    async def probe() -> bool:
        return await asyncio.to_thread(path.exists)

    return probe


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


async def test_a_dying_child_is_restarted_later_each_time_with_the_reason_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starts, ready = tmp_path / "starts", tmp_path / "ready"
    child = script(f"""
        import os, sys, time
        with open({str(starts)!r}, "a") as f:
            f.write(f"{{time.monotonic()}}\\n")
        print("hello from", os.getpid(), flush=True)
        if len(open({str(starts)!r}).read().split()) < 3:
            sys.exit(3)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    logged: list[str] = []
    supervisor = Supervisor(FAST, log=logged.append)
    try:
        running = await asyncio.wait_for(
            supervisor.start(ChildSpec("worker", child, ready=file_exists(ready))), 30
        )
        assert running.starts == 3
    finally:
        await supervisor.stop()

    times = [float(t) for t in lines(starts)]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2, "the first restart waits initial_delay"
    assert times[2] - times[1] >= 0.4, "the second waits twice as long"
    exits = [line for line in logged if "exited" in line]
    assert len(exits) == 2
    assert all("worker exited (exit code 3)" in line for line in exits)
    assert "restarting it in 0.2 s" in exits[0]
    assert "restarting it in 0.4 s" in exits[1]
    assert logged[-1] == "worker stopped (killed by SIGTERM)"
    assert "worker | hello from" in capsys.readouterr().err, "the child's output is passed on, prefixed"


async def test_a_child_that_keeps_failing_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    child = script(f"""
        import sys
        open({str(starts)!r}, "a").write("x\\n")
        sys.exit(7)
    """)
    logged: list[str] = []
    policy = RestartPolicy(initial_delay=0.05, max_delay=0.1, max_failures=3, window_seconds=60)
    supervisor = Supervisor(policy, log=logged.append)
    try:
        with pytest.raises(ChildFailedError) as raised:
            await asyncio.wait_for(
                supervisor.start(ChildSpec("broken", child, ready=file_exists(tmp_path / "no"))), 30
            )
    finally:
        await supervisor.stop()
    assert len(lines(starts)) == 3, "started three times, then given up"
    assert "broken exited (exit code 7)" in raised.value.message
    assert "3 failures within 60 s" in raised.value.message
    assert raised.value.code == "child_failed"


async def test_children_stop_last_first_and_one_ignoring_sigterm_is_killed_with_its_group(
    tmp_path: Path,
) -> None:
    first_pid, second_pid, grandchild_pid = tmp_path / "first", tmp_path / "second", tmp_path / "grandchild"
    first = script(f"""
        import os, time
        open({str(first_pid)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    stubborn = script(f"""
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sleeper = subprocess.Popen(["sleep", "60"])
        open({str(grandchild_pid)!r}, "w").write(str(sleeper.pid))
        open({str(second_pid)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    logged: list[str] = []
    supervisor = Supervisor(FAST, log=logged.append)
    try:
        await supervisor.start(ChildSpec("first", first, ready=file_exists(first_pid)))
        await supervisor.start(ChildSpec("second", stubborn, ready=file_exists(second_pid), stop_timeout=0.5))
        pids = [int(path.read_text()) for path in (first_pid, second_pid, grandchild_pid)]
    finally:
        await supervisor.stop()
    stops = [line for line in logged if line.startswith("stopping") or " stopped " in line]
    assert stops[0].startswith("stopping the second")
    assert "second stopped (killed by SIGKILL)" in stops
    assert stops.index("second stopped (killed by SIGKILL)") < next(
        i for i, line in enumerate(stops) if line.startswith("stopping the first")
    )
    assert stops[-1] == "first stopped (killed by SIGTERM)"
    assert all(gone(pid) for pid in pids), "a child or the process it started is still running"


async def test_hurry_kills_at_once_instead_of_waiting_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = script(f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    supervisor = Supervisor(FAST, log=lambda line: None)
    await supervisor.start(ChildSpec("slow", stubborn, ready=file_exists(ready), stop_timeout=60))
    asyncio.get_running_loop().call_later(0.3, supervisor.hurry.set)
    began = time.monotonic()
    await supervisor.stop()
    assert time.monotonic() - began < 10


async def test_what_a_dead_child_started_is_killed_before_it_is_restarted(tmp_path: Path) -> None:
    starts, ready, leftover = tmp_path / "starts", tmp_path / "ready", tmp_path / "leftover"
    child = script(f"""
        import subprocess, sys, time
        open({str(starts)!r}, "a").write("x\\n")
        if len(open({str(starts)!r}).read().split()) == 1:
            sleeper = subprocess.Popen(["sleep", "60"])  # holds the output pipe too
            open({str(leftover)!r}, "w").write(str(sleeper.pid))
            sys.exit(3)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    supervisor = Supervisor(FAST, log=lambda line: None)
    try:
        began = time.monotonic()
        await asyncio.wait_for(supervisor.start(ChildSpec("worker", child, ready=file_exists(ready))), 30)
        assert time.monotonic() - began < 10
    finally:
        await supervisor.stop()
    assert gone(int(leftover.read_text())), "the dead child's own child is still running"


async def test_a_child_with_a_huge_line_of_output_does_not_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = tmp_path / "ready"
    child = script(f"""
        import sys, time
        sys.stdout.write("x" * 500_000 + "\\n" + "y" * 500_000)
        sys.stdout.flush()
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    supervisor = Supervisor(FAST, log=lambda line: None)
    try:
        await asyncio.wait_for(supervisor.start(ChildSpec("chatty", child, ready=file_exists(ready))), 30)
    finally:
        await supervisor.stop()
    err = capsys.readouterr().err
    assert "chatty | " + "x" * 500_000 + "\n" in err
    assert "chatty | " + "y" * 500_000 + "\n" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    runner = script(f"""
        import asyncio, sys
        from pathlib import Path
        from opentier.supervisor import ChildSpec, Supervisor

        async def ready():
            return Path({str(pid_file)!r}).exists()

        async def main():
            supervisor = Supervisor(log=print)
            child = [sys.executable, "-c",
                     "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
            await supervisor.start(ChildSpec("orphan", child, ready=ready))
            print("ready", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    process = subprocess.Popen(runner, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        child = int(pid_file.read_text())
        assert psutil.pid_exists(child)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert gone(child), "the child outlived its supervisor"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
