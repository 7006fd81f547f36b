"""The README's run command, end to end: `opentier up` brings up PostgreSQL, the host and the gateway,
answers SERVING and ready, and one Ctrl-C (SIGINT to the process group, as a terminal sends it) stops
everything."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from opentier.host.health import check_health

OPENTIER = Path(sys.executable).with_name("opentier")


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(process)
    return found


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@pytest.mark.skipif(
    bool(os.environ.get("OPENTIER_TEST_DATABASE_URL")),
    reason="exercises the embedded PostgreSQL; an external test database is configured",
)
def test_up_serves_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    env.update(
        {
            "OPENTIER_DATA_DIR": str(tmp_path / "state"),
            "OPENTIER_HOST__PORT": "0",
            "OPENTIER_GATEWAY__PORT": "0",
        }
    )
    process = subprocess.Popen(
        [str(OPENTIER), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        target = read_until(process, r"^host: (\S+) ", timeout=120).group(1)
        gateway = read_until(process, r"^gateway: (http://\S+) ", timeout=30).group(1)
        read_until(process, r"OpenTier is up", timeout=10)
        assert asyncio.run(check_health(target, 5.0)) == "SERVING"
        ready = httpx.get(f"{gateway}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"{gateway}/openapi.json", timeout=10).json()["openapi"].startswith("3.")
        secret = tmp_path / "state" / "jwt.secret"
        assert secret.stat().st_mode & 0o077 == 0, "the token-signing secret is private"
        data_dir = (tmp_path / "state" / "postgres").resolve()
        assert postgres_processes(data_dir), "the embedded PostgreSQL is not running"

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert asyncio.run(check_health(target, 2.0)) == "UNREACHABLE"
    deadline = time.monotonic() + 10
    while postgres_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postgres_processes(data_dir) == [], "PostgreSQL outlived Ctrl-C"
