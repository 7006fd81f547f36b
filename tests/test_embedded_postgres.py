"""The embedded PostgreSQL: start, adopt, stop, stale pid files and orphaned servers, for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from opentier.db.embedded import EmbeddedPostgres, PostmasterPid, shared_buffers_mb
from opentier.errors import EmbeddedDatabaseError


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Live PostgreSQL processes that belong to ``data_dir`` (by working folder or ``-D``)."""
    found = []
    for process in psutil.process_iter(["name", "cwd", "cmdline", "status"]):
        info = process.info
        if info["name"] != "postgres" or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["cwd"] == str(data_dir) or str(data_dir) in (info["cmdline"] or []):
            found.append(process)
    return found


def pid_is_live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A fresh cluster for one test; stopped afterwards whatever the test did."""
    instance = EmbeddedPostgres(tmp_path / "pg", database="embedded_test")
    try:
        yield instance
    finally:
        instance.stop()
        assert postgres_processes(instance.data_dir) == []


async def query_one(url: str | URL, sql: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar_one()
    finally:
        await engine.dispose()


async def test_start_connect_stop(server: EmbeddedPostgres) -> None:
    assert server.status().state == "stopped"

    status = server.start()

    assert status.running and status.pid is not None
    assert server.status().pid == status.pid
    assert await query_one(server.url(), "SELECT current_database()") == "embedded_test"
    assert (
        await query_one(server.url(), "SELECT name FROM pg_available_extensions WHERE name = 'vector'")
        == "vector"
    )
    assert postgres_processes(server.data_dir)
    # A page cache sized for search, not PostgreSQL's 128 MB default (on a machine that has the room).
    shown = await query_one(
        server.url(), "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"
    )
    assert shown == shared_buffers_mb()

    assert server.stop() is True

    assert server.status().state == "stopped"
    assert server.status().pid is None
    assert not pid_is_live(status.pid)
    assert postgres_processes(server.data_dir) == []
    assert not (server.data_dir / "postmaster.pid").exists()
    assert server.stop() is False  # stopping a stopped server is fine


def test_shared_buffers_take_an_eighth_of_memory_within_bounds() -> None:
    gib = 1024**3
    assert shared_buffers_mb(512 * 1024**2) == 128
    assert shared_buffers_mb(8 * gib) == 1024
    assert shared_buffers_mb(64 * gib) == 2048


def test_start_twice_adopts_the_running_server(server: EmbeddedPostgres) -> None:
    first = server.start()
    again = server.start()
    other_handle = EmbeddedPostgres(server.data_dir, database="embedded_test").start()

    assert first.pid == again.pid == other_handle.pid
    assert len([p for p in postgres_processes(server.data_dir) if p.pid == first.pid]) == 1


@pytest.mark.parametrize("pid_owner", ["exited process", "unrelated live process"])
def test_stale_postmaster_pid_is_replaced(server: EmbeddedPostgres, pid_owner: str) -> None:
    server.start()
    real_lines = (server.data_dir / "postmaster.pid").read_text().splitlines()
    server.stop()
    if pid_owner == "exited process":
        finished = subprocess.Popen(["true"])
        finished.wait()
        stale_pid = finished.pid
    else:
        stale_pid = os.getpid()  # alive, but not a postgres of this data folder
    (server.data_dir / "postmaster.pid").write_text("\n".join([str(stale_pid), *real_lines[1:]]))
    assert server.status().state == "stopped"

    status = server.start()

    assert status.running and status.pid != stale_pid
    info = PostmasterPid.read(server.data_dir)
    assert info is not None and info.pid == status.pid


def test_server_of_a_sigkilled_starter_is_found_and_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from opentier.db.embedded import EmbeddedPostgres
                status = EmbeddedPostgres({str(data_dir)!r}).start()
                print(status.pid, flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        postmaster_pid = int(starter.stdout.readline())
        # In its own session: a Ctrl-C to the starter's process group does not reach it.
        assert os.getsid(postmaster_pid) != os.getsid(starter.pid)
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    server = EmbeddedPostgres(data_dir)
    try:
        assert pid_is_live(postmaster_pid)  # the server outlived its starter
        assert server.status().pid == postmaster_pid

        assert server.stop() is True

        assert not pid_is_live(postmaster_pid)
        assert postgres_processes(data_dir) == []
        assert server.status().state == "stopped"
    finally:
        server.stop()


def test_ctrl_c_lets_the_with_block_stop_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from opentier.db.embedded import EmbeddedPostgres
                with EmbeddedPostgres({str(data_dir)!r}) as server:
                    print(server.status().pid, flush=True)
                    time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own terminal-like process group, to send it a Ctrl-C
    )
    try:
        assert starter.stdout is not None
        postmaster_pid = int(starter.stdout.readline())
        os.killpg(starter.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert starter.wait(timeout=60) != 0  # KeyboardInterrupt, after the orderly stop
        assert not pid_is_live(postmaster_pid)
        assert postgres_processes(data_dir) == []
        log = (data_dir / "server.log").read_text()
        assert "received fast shutdown request" in log  # pg_ctl stop -m fast, not a crash
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        EmbeddedPostgres(data_dir).stop()


def test_orphaned_backends_of_a_killed_postmaster_are_cleaned_up(server: EmbeddedPostgres) -> None:
    killed = server.start().pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)  # the worst case: no shutdown at all, pid file left
    wait_until(lambda: not pid_is_live(killed))

    assert server.status().state == "stopped"
    restarted = server.start()

    assert restarted.running and restarted.pid != killed
    assert server.stop() is True
    assert postgres_processes(server.data_dir) == []


async def test_long_data_path_puts_the_socket_under_tmp(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["a-rather-long-folder-name"] * 4))
    server = EmbeddedPostgres(deep / "pg", database="deep")
    assert str(server.socket_dir).startswith("/tmp/opentier-pg-")
    try:
        server.start()
        assert await query_one(server.url(), "SELECT 1") == 1
    finally:
        server.stop()
    assert postgres_processes(server.data_dir) == []
    assert not server.socket_dir.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_tcp_port_needs_the_password(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedPostgres(tmp_path / "pg", port, database="tcp")
    try:
        status = server.start()
        assert status.port == port
        password = server.password_file.read_text().strip()
        tcp = f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{port}/tcp"
        assert await query_one(tcp, "SELECT inet_server_port()") == port
        with pytest.raises(Exception, match="password authentication failed"):
            await query_one(f"postgresql+asyncpg://postgres:wrong@127.0.0.1:{port}/tcp", "SELECT 1")
    finally:
        server.stop()


def test_failed_start_reports_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedPostgres(tmp_path / "pg", taken.getsockname()[1], start_timeout=20)
        with pytest.raises(EmbeddedDatabaseError, match=r"(?s)failed to start.*could not"):
            server.start()
    assert server.status().state == "stopped"
    assert postgres_processes(server.data_dir) == []


def test_a_folder_that_is_no_cluster_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddedDatabaseError, match="not empty and holds no PostgreSQL cluster"):
        EmbeddedPostgres(tmp_path / "pg").start()


FORKS_UNDER_GRPC = """
import asyncio, sys
import opentier  # first, as every OpenTier process imports it
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentier.db.embedded import EmbeddedPostgres

async def main() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)

    async def traffic() -> None:  # other threads inside gRPC while we fork
        while True:
            await stub.Check(health_pb2.HealthCheckRequest())

    busy = asyncio.create_task(traffic())
    postgres = EmbeddedPostgres(sys.argv[1])
    codes = [
        (await asyncio.to_thread(postgres._run_tool, ["pg_ctl", "--version"], timeout=30)).returncode
        for _ in range(int(sys.argv[2]))
    ]
    busy.cancel()
    await channel.close()
    await server.stop(None)
    print("crashed", sum(code < 0 for code in codes), "failed", sum(code != 0 for code in codes))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="tools run as the server's user only when we are root")
def test_tools_run_as_the_server_user_never_crash_in_a_process_that_uses_grpc(tmp_path: Path) -> None:
    """The host, the gateway and the supervisor hold gRPC channels while they start or stop the
    embedded PostgreSQL. Running a tool as its system user forks; gRPC's fork handlers made a quarter
    of those children crash (SIGSEGV) before their exec, so a stop or a start failed now and then.
    OpenTier turns those handlers off (opentier/__init__.py)."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", FORKS_UNDER_GRPC, str(tmp_path), "150"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "crashed 0 failed 0" in done.stdout, done.stdout + done.stderr[-2000:]
