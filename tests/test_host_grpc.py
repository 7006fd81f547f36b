"""The real gRPC host on port 0: health, plugin listing through the generated stubs, token auth,
error mapping, lifecycle hooks, and the ``opentier host`` commands."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from opentier import hookimpl
from opentier.components import LLM, LLMEvent, LLMRequest, TextDelta, Usage
from opentier.config import HostSettings, Settings
from opentier.errors import ConfigError, NotFoundError, PluginError, UnknownComponentError
from opentier.generated.intelligence.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    common_pb2,
    plugins_pb2,
    plugins_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from opentier.host.auth import TokenAuthInterceptor, bearer_metadata
from opentier.host.errors import ERROR_CODE_KEY, ErrorMappingInterceptor, error_info
from opentier.host.health import UNREACHABLE, check_health
from opentier.host.server import HostServer
from opentier.host.token import resolve_host_token, token_path
from opentier.plugin_manager import PluginSelection, PluginSystem

TOKEN = "test-host-token-0123456789"
PLUGIN_SERVICE = "opentier.intelligence.v1.PluginService"
OPENTIER = Path(sys.executable).with_name("opentier")


class EchoLLM(LLM):
    name = "echo-test"
    description = "repeats the last message"
    context_window = 4096

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        yield TextDelta(request.messages[-1].content)
        yield Usage(input_tokens=1, output_tokens=1)


class LifecyclePlugin:
    """Registers one LLM and records the lifecycle hooks the host calls."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def register_llms(self, register: Callable[[LLM], None]) -> None:
        register(EchoLLM())

    @hookimpl
    def opentier_startup(self, settings: Settings) -> None:
        self.events.append(f"startup:{settings.host.port}")

    @hookimpl
    def opentier_shutdown(self) -> None:
        self.events.append("shutdown")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OPENTIER_"):
            monkeypatch.delenv(key)


def make_settings(data_dir: Path, port: int = 0) -> Settings:
    return Settings(data_dir=data_dir, host=HostSettings(port=port, grace_seconds=1.0))


def make_plugins(plugin: object) -> PluginSystem:
    system = PluginSystem(PluginSelection(autoload=False))
    assert system.add(plugin, "lifecycle-test")
    system.check()
    system.collect()
    return system


@pytest.fixture
async def host(clean_env: None, tmp_path: Path) -> AsyncIterator[tuple[HostServer, LifecyclePlugin]]:
    plugin = LifecyclePlugin()
    server = HostServer(make_settings(tmp_path), make_plugins(plugin), TOKEN)
    await server.start()
    try:
        yield server, plugin
    finally:
        await server.stop()


@pytest.fixture
async def channel(host: tuple[HostServer, LifecyclePlugin]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(host[0].target) as chan:
        yield chan


def caller() -> common_pb2.Caller:
    return common_pb2.Caller(tenant_id="t1", user_id="u1", scopes=["admin"], request_id="req-1")


def trailer(err: grpc.aio.AioRpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            return str(value)
    return None


# --- health and plugin listing ----------------------------------------------------------------


async def test_health_is_serving_without_a_token(
    host: tuple[HostServer, LifecyclePlugin], channel: grpc.aio.Channel
) -> None:
    server, _plugin = host
    assert server.port > 0
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", PLUGIN_SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert await check_health(server.target, 5) == "SERVING"
    assert await check_health(server.target, 5, service=PLUGIN_SERVICE) == "SERVING"
    # services without an implementation are not pretended
    unknown = "opentier.intelligence.v1.ChatService"
    assert await check_health(server.target, 5, service=unknown) == "SERVICE_UNKNOWN"


async def test_list_plugins_through_the_generated_stub(channel: grpc.aio.Channel) -> None:
    stub = plugins_pb2_grpc.PluginServiceStub(channel)
    reply = await stub.ListPlugins(
        plugins_pb2.ListPluginsRequest(caller=caller()), metadata=bearer_metadata(TOKEN), timeout=5
    )
    assert [p.name for p in reply.plugins] == ["lifecycle-test"]
    plugin = reply.plugins[0]
    assert plugin.module == LifecyclePlugin.__module__
    assert plugin.distribution == "" and plugin.version == ""
    assert [(c.kind, c.name, c.description) for c in plugin.components] == [
        ("llm", "echo-test", "repeats the last message")
    ]
    assert list(reply.failures) == []


def test_list_plugins_reports_failures() -> None:
    from opentier.host.servicers.plugins import list_plugins_response
    from opentier.plugin_manager import PluginFailure

    system = make_plugins(LifecyclePlugin())
    system.failures.append(PluginFailure("broken", "opentier-broken", "1.0", "ImportError: boom"))
    reply = list_plugins_response(system)
    assert [(f.name, f.distribution, f.version, f.error) for f in reply.failures] == [
        ("broken", "opentier-broken", "1.0", "ImportError: boom")
    ]


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ((), "missing credential"),
        (bearer_metadata("not-the-token"), "not valid"),
        ((("authorization", f"Basic {TOKEN}"),), "Bearer <host token>"),
    ],
)
async def test_calls_without_the_right_token_are_refused(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], problem: str
) -> None:
    stub = plugins_pb2_grpc.PluginServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListPlugins(plugins_pb2.ListPluginsRequest(caller=caller()), metadata=metadata, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert problem in (info.value.details() or "")
    assert trailer(info.value) == "unauthenticated"


async def test_unimplemented_services_need_the_token_and_say_unimplemented(
    channel: grpc.aio.Channel,
) -> None:
    search = search_pb2_grpc.SearchServiceStub(channel)
    request = search_pb2.SearchRequest(caller=caller(), query="x")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Search(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Search(request, metadata=bearer_metadata(TOKEN), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    chat = chat_pb2_grpc.ChatServiceStub(channel)
    call = chat.Chat(timeout=5)
    await call.write(chat_pb2.ChatRequest(caller=caller(), start=chat_pb2.ChatStart(message="hi")))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- lifecycle --------------------------------------------------------------------------------


async def test_lifecycle_hooks_and_stop(clean_env: None, tmp_path: Path) -> None:
    plugin = LifecyclePlugin()
    server = HostServer(make_settings(tmp_path), make_plugins(plugin), TOKEN)
    await server.start()
    target = server.target
    assert plugin.events == ["startup:0"]
    assert await check_health(target, 5) == "SERVING"
    await server.stop()
    await server.wait()
    assert plugin.events == ["startup:0", "shutdown"]
    assert await check_health(target, 1) == UNREACHABLE
    await server.stop()  # idempotent
    assert plugin.events == ["startup:0", "shutdown"]


async def test_a_taken_port_is_a_config_error(
    host: tuple[HostServer, LifecyclePlugin], tmp_path: Path
) -> None:
    taken = host[0].port
    other = HostServer(make_settings(tmp_path, port=taken), make_plugins(LifecyclePlugin()), TOKEN)
    with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{taken}"):
        await other.start()


def test_empty_token_is_refused(clean_env: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="host token is empty"):
        HostServer(make_settings(tmp_path), make_plugins(LifecyclePlugin()), "")


# --- error mapping ----------------------------------------------------------------------------


async def _not_found(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    raise NotFoundError("collection 'c9' does not exist")


async def _bug(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError("secret internals")


async def _stream_then_fail(_request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    raise UnknownComponentError("no llm named 'x'; available: local")


@pytest.fixture
async def error_server() -> AsyncIterator[str]:
    handlers = {
        "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
        "Bug": grpc.unary_unary_rpc_method_handler(_bug),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream_then_fail),
    }
    server = grpc.aio.server(interceptors=[TokenAuthInterceptor(TOKEN), ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Errors", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_open_tier_errors_map_to_status_and_code_trailer(error_server: str) -> None:
    async with grpc.aio.insecure_channel(error_server) as chan:
        call = chan.unary_unary("/test.Errors/NotFound")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"", metadata=bearer_metadata(TOKEN), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "collection 'c9' does not exist"
    assert trailer(info.value) == "not_found"


async def test_unexpected_errors_are_internal_and_leak_nothing(
    error_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(error_server) as chan:
        call = chan.unary_unary("/test.Errors/Bug")
        with (
            caplog.at_level(logging.ERROR, logger="opentier.host.errors"),
            pytest.raises(grpc.aio.AioRpcError) as info,
        ):
            await call(b"", metadata=bearer_metadata(TOKEN), timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (info.value.details() or "")
    assert "host log" in (info.value.details() or "")
    assert trailer(info.value) == "internal"
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)


async def test_errors_in_a_stream_map_after_the_first_message(error_server: str) -> None:
    async with grpc.aio.insecure_channel(error_server) as chan:
        call = chan.unary_stream("/test.Errors/Stream")(b"", metadata=bearer_metadata(TOKEN), timeout=5)
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for message in call:
                received.append(message)
    assert received == [b"first"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(info.value) == "component_unknown"


def test_error_info_for_stream_events() -> None:
    info = error_info(NotFoundError("gone"))
    assert (info.code, info.message, info.retryable) == ("not_found", "gone", False)
    generic = error_info(RuntimeError("secret"))
    assert generic.code == "internal" and "secret" not in generic.message


# --- the host token ---------------------------------------------------------------------------


def test_token_file_is_created_private_and_reused(clean_env: None, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "new" / "state")
    token = resolve_host_token(settings)
    path = token_path(settings)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_host_token(settings) == token
    assert [p.name for p in path.parent.iterdir()] == ["host.token"]


def test_token_from_the_environment_wins(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENTIER_HOST__TOKEN", "from-the-environment")
    settings = Settings(data_dir=tmp_path)
    assert resolve_host_token(settings) == "from-the-environment"
    assert not token_path(settings).exists()


def test_token_file_problems(clean_env: None, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = token_path(settings)
    path.write_text("shared-token\n")
    path.chmod(0o644)
    assert resolve_host_token(settings) == "shared-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_host_token(settings)


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    env.update(
        OPENTIER_DATA_DIR=str(tmp_path),
        OPENTIER_DISABLE_PLUGIN_AUTOLOAD="1",
        OPENTIER_HOST__GRACE_SECONDS="1",
    )
    return env


def database_env(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at the test database (`host serve` needs one)."""
    env = {"OPENTIER_DATABASE__URL": str(settings.database.url)}
    if settings.database.password is not None:
        env["OPENTIER_DATABASE__PASSWORD"] = settings.database.password.get_secret_value()
    return env


@pytest.fixture
def served(
    cli_env: dict[str, str], tmp_path: Path, db_settings: Settings
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [str(OPENTIER), "host", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=cli_env | database_env(db_settings),
        cwd=tmp_path,
    )
    try:
        assert process.stderr is not None
        seen: list[str] = []
        while not seen or "opentier host serving on " not in seen[-1]:
            line = process.stderr.readline()
            assert line, "".join(seen)  # the process ended before serving
            seen.append(line)
        target = seen[-1].split("serving on ", 1)[1].split()[0]
        yield process, target
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_cli_serve_health_and_graceful_stop(
    served: tuple[subprocess.Popen[str], str], cli_env: dict[str, str]
) -> None:
    process, target = served
    health = [str(OPENTIER), "host", "health", "--target", target, "--timeout", "5"]
    done = subprocess.run(health, capture_output=True, text=True, env=cli_env, check=False, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), done.stderr
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert process.stderr is not None
    assert "opentier host stopped" in process.stderr.read()
    done = subprocess.run(health, capture_output=True, text=True, env=cli_env, check=False, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (1, UNREACHABLE)


def test_cli_serve_says_how_to_start_the_database(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(
        [str(OPENTIER), "host", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=cli_env,  # the embedded PostgreSQL of tmp_path, never started
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "error [database_error]: the embedded PostgreSQL of" in done.stderr
    assert "is not running: run `opentier db start`" in done.stderr and "`opentier up`" in done.stderr


def test_cli_help_describes_the_commands() -> None:
    from click.testing import CliRunner

    from opentier.cli import main

    for args in (["host"], ["host", "serve"], ["host", "health"]):
        result = CliRunner().invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and "Usage: main host" in result.output, result.output
    result = CliRunner().invoke(main, ["host", "health", "--help"])
    assert "exit 0 only when it is SERVING" in result.output
    assert "SIGTERM" in CliRunner().invoke(main, ["host", "serve", "--help"]).output


class FailingStartupPlugin:
    @hookimpl
    def opentier_startup(self, settings: Settings) -> None:
        raise RuntimeError("model file missing")


async def test_a_failing_startup_hook_stops_start(clean_env: None, tmp_path: Path) -> None:
    system = PluginSystem(PluginSelection(autoload=False))
    system.add(FailingStartupPlugin(), "fails-at-startup")
    server = HostServer(make_settings(tmp_path), system, TOKEN)
    with pytest.raises(PluginError, match="opentier_startup: RuntimeError: model file missing"):
        await server.start()


async def test_unix_socket(clean_env: None, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, host=HostSettings(address=f"unix:{tmp_path}/host.sock"))
    async with HostServer(settings, make_plugins(LifecyclePlugin()), TOKEN) as server:
        assert server.target == f"unix:{tmp_path}/host.sock"
        assert await check_health(server.target, 5) == "SERVING"
