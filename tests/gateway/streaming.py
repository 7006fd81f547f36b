"""The real gateway under Hypercorn in front of a real host that can chat, for the streaming tests
(WebSocket, SSE, the OpenAI-compatible API, rate limits and token quotas).

Import the fixtures into a test module by their function names::

    from tests.gateway.streaming import (  # noqa: F401 - fixtures
        chat_gateway_fixture, chat_settings_fixture, limits_options_fixture, host_chat_options_fixture,
        streaming_host_fixture, streaming_options_fixture,
    )

They build on ``gateway_settings`` (tests/gateway/conftest.py) and ``db_settings`` (tests/conftest.py).

Fixtures (function scope):

``host_chat_options``, ``streaming_options``, ``limits_options``
    ``dict`` of overrides of the host's ``[chat]`` settings, the gateway's ``[streaming]`` and
    ``[limits]`` settings; parametrize them indirectly to change them::

        @pytest.mark.parametrize("streaming_options", [{"send_buffer_events": 8}], indirect=True)

``streaming_host``
    :class:`StreamingHost`: the real gRPC host (port 0, real PostgreSQL) with the text loader, the
    basic cleaners, the ``vector`` retriever, the test embedder ``test-hash`` and the test LLMs
    :attr:`StreamingHost.llms` (:class:`TestLLMs`); the default LLM is ``citing``, any may be named.
``chat_settings``
    The gateway :class:`~opentier.config.Settings` pointing at that host (its token, deadlines short
    enough for tests, :data:`STREAMING_DEFAULTS` under ``streaming_options``, ``limits_options``).
``chat_gateway``
    :class:`ChatGateway`: ``create_app(chat_settings)`` served by Hypercorn on 127.0.0.1 port 0, with
    :attr:`~ChatGateway.api` (an HTTP client checking each answer against /openapi.json),
    :attr:`~ChatGateway.url`, :meth:`~ChatGateway.ws_url` and the host's :attr:`~ChatGateway.llms`.

The test LLMs (each records its requests and how each of its streams ended: ``complete``, ``error``,
``GeneratorExit`` when closed at a ``yield``, ``CancelledError`` when cancelled while waiting):

``citing`` (:class:`CitingLLM`)
    Fast: answers with the first sentence of source [1] and cites it, ``"<sentence> [1]"``, a word per
    token; without sources, :data:`NO_SOURCE_ANSWER`. Reports usage (input: words of the prompt).
``endless`` (:class:`EndlessLLM`)
    Sends ``"tick "`` every :attr:`~EndlessLLM.interval` seconds until it is stopped: for cancel,
    disconnect and resume tests.
``flood`` (:class:`FloodLLM`)
    Sends :attr:`~FloodLLM.pieces` pieces of :attr:`~FloodLLM.piece_chars` characters as fast as it can
    (5 MB by default), then usage; :attr:`~FloodLLM.sent` counts the pieces the host took.
``scripted`` (:class:`tests.engine.chatting.ScriptedLLM`)
    Its ``script``, ``queued`` scripts and ``usage`` are set by the test.

Helpers:

``await signed_in_key(gateway, scopes=("chat", "ingest", "read"))`` → :class:`ChatUser`
    A member of a fresh tenant, signed in, with an API key holding ``scopes``.
``await ingest_text(gateway, user, text, filename="notes.txt", collection_id=None)`` → :class:`Ingested`
    Uploads ``text`` over REST (into a new collection unless one is given) and waits until its job
    succeeded.
``ws_connect(gateway, ...)``, ``await receive(ws)``, ``await read_turn(ws)``
    A ``websockets`` client of ``/v1/chat/ws``, the next JSON message, the events of one turn.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from openapi_core import OpenAPI
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect

from opentier.components import LLM, LLMEvent, LLMRequest, TextDelta, Usage
from opentier.config import (
    ChatSettings,
    HostSettings,
    LimitsSettings,
    RetrievalSettings,
    Settings,
    StreamingSettings,
)
from opentier.gateway.app import create_app
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins
from tests.engine.chatting import ScriptedLLM, llm_plugin
from tests.engine.helpers import HashEmbedder, plugin
from tests.gateway.served import Served, ServedAPI, new_member, start_served, stop_served
from tests.host.conftest import TOKEN, host_settings

#: The host's chat settings: the citing model by default, every test model allowed, quick time limits.
HOST_CHAT_DEFAULTS: dict[str, Any] = {
    "llm": "citing",
    "allowed_llms": ["*"],
    "stall_timeout_seconds": 5.0,
    "close_timeout_seconds": 2.0,
    "deadline_seconds": 60.0,
}
#: The gateway's streaming settings in tests (a test may override any).
STREAMING_DEFAULTS: dict[str, Any] = {
    "heartbeat_seconds": 15.0,
    "send_buffer_events": 64,
    "slow_client_seconds": 2.0,
    "resume_window_seconds": 5.0,
    "turn_deadline_seconds": 60.0,
}
#: Deadline of the gateway's unary host calls.
DEADLINE = 5.0
#: What ``citing`` answers when it got no source.
NO_SOURCE_ANSWER = "No source was given to me."

_WORDS = re.compile(r"\w+")
WS_PATH = "/v1/chat/ws"


# -- test LLMs -------------------------------------------------------------------------------------


class RecordingLLM(LLM):
    """An LLM that records each request and how each of its streams ended."""

    name = "recording"
    context_window = 8192

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []
        self.endings: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(_WORDS.findall(text))

    async def wait_started(self, count: int = 1, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Return once ``count`` streams have begun."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                await asyncio.sleep(0.01)

    async def wait_ended(self, count: int = 1, timeout: float = 10) -> list[str]:  # noqa: ASYNC109
        """``endings`` once at least ``count`` streams have ended."""
        async with asyncio.timeout(timeout):
            while len(self.endings) < count:
                await asyncio.sleep(0.01)
        return self.endings

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        try:
            async for event in self.produce(request):
                yield event
        except GeneratorExit:
            self.endings.append("GeneratorExit")
            raise
        except asyncio.CancelledError:
            self.endings.append("CancelledError")
            raise
        except Exception:
            self.endings.append("error")
            raise
        self.endings.append("complete")

    def produce(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        raise NotImplementedError


class CitingLLM(RecordingLLM):
    """Answers with the first sentence of source [1], cited; a word per token."""

    name = "citing"

    async def produce(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        if request.sources:
            first = request.sources[0]
            sentence = re.split(r"(?<=[.!?])\s", first.text.strip(), maxsplit=1)[0]
            answer = f"{sentence} [{first.number}]"
        else:
            answer = NO_SOURCE_ANSWER
        words = answer.split(" ")
        for index, word in enumerate(words):
            await asyncio.sleep(0)
            yield TextDelta(word if index == len(words) - 1 else word + " ")
        prompt = " ".join(message.content for message in request.messages)
        yield Usage(input_tokens=self.count_tokens(prompt), output_tokens=len(words))


class EndlessLLM(RecordingLLM):
    """Sends ``text`` every ``interval`` seconds until it is stopped."""

    name = "endless"

    def __init__(self, interval: float = 0.02, text: str = "tick ") -> None:
        super().__init__()
        self.interval = interval
        self.text = text
        #: Pieces sent, over all streams.
        self.sent = 0

    async def produce(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        while True:
            self.sent += 1
            yield TextDelta(self.text)
            await asyncio.sleep(self.interval)


class FloodLLM(RecordingLLM):
    """Sends ``pieces`` pieces of ``piece_chars`` characters as fast as the host takes them."""

    name = "flood"

    def __init__(self, pieces: int = 5000, piece_chars: int = 1000) -> None:
        super().__init__()
        self.pieces = pieces
        self.piece_chars = piece_chars
        #: Pieces the host took, over all streams.
        self.sent = 0

    async def produce(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        piece = ("flood " * (self.piece_chars // 6 + 1))[: self.piece_chars]
        for _ in range(self.pieces):
            self.sent += 1
            yield TextDelta(piece)
            await asyncio.sleep(0)
        yield Usage(input_tokens=10, output_tokens=self.pieces * self.piece_chars // 4)


@dataclass
class TestLLMs:
    """The host's test models, by name."""

    __test__ = False  # not a test class

    citing: CitingLLM
    endless: EndlessLLM
    flood: FloodLLM
    scripted: ScriptedLLM

    def all(self) -> Sequence[LLM]:
        return (self.citing, self.endless, self.flood, self.scripted)


# -- the host --------------------------------------------------------------------------------------


class StreamingHost:
    """The real host with the test models; :meth:`stop` and :meth:`start` again keep its port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.llms = TestLLMs(CitingLLM(), EndlessLLM(), FloodLLM(), ScriptedLLM())
        self.server: HostServer | None = None

    @property
    def target(self) -> str:
        assert self.server is not None
        return self.server.target

    async def start(self) -> None:
        plugins = load_plugins(
            selection=PluginSelection(allow=["text", "basic-cleaners", "vector"]),
            extra=[("test", plugin(HashEmbedder())), ("test-llms", llm_plugin(*self.llms.all()))],
        )
        server = HostServer(
            self.settings, plugins, TOKEN, runtime=HostRuntime(self.settings, plugins.registry)
        )
        await server.start()
        self.server = server
        self.settings = self.settings.model_copy(
            update={"host": self.settings.host.model_copy(update={"port": server.port})}
        )

    async def stop(self, grace: float = 0.5) -> None:
        if self.server is not None:
            await self.server.stop(grace=grace)
            self.server = None


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(getattr(request, "param", None) or {})


@pytest.fixture(name="host_chat_options")
def host_chat_options_fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _options(request)


@pytest.fixture(name="streaming_options")
def streaming_options_fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _options(request)


@pytest.fixture(name="limits_options")
def limits_options_fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _options(request)


@pytest_asyncio.fixture(name="streaming_host")
async def streaming_host_fixture(
    db_settings: Settings, tmp_path: Path, host_chat_options: dict[str, Any]
) -> AsyncIterator[StreamingHost]:
    root = tmp_path / "root"
    root.mkdir()
    settings = host_settings(db_settings, tmp_path / "host-state", root).model_copy(
        update={
            "retrieval": RetrievalSettings(retriever="vector"),
            "chat": ChatSettings(**(HOST_CHAT_DEFAULTS | host_chat_options)),
        }
    )
    host = StreamingHost(settings)
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


@pytest.fixture(name="chat_settings")
def chat_settings_fixture(
    gateway_settings: Settings,
    streaming_host: StreamingHost,
    streaming_options: dict[str, Any],
    limits_options: dict[str, Any],
    tmp_path: Path,
) -> Settings:
    gateway = gateway_settings.gateway.model_copy(
        update={
            "host_targets": [streaming_host.target],
            "host_deadline_seconds": DEADLINE,
            "retry_after_seconds": 2,
            "shutdown_grace_seconds": 5.0,
        }
    )
    return gateway_settings.model_copy(
        update={
            "data_dir": tmp_path / "gateway-state",
            "host": HostSettings(token=TOKEN),
            "gateway": gateway,
            "streaming": StreamingSettings(**(STREAMING_DEFAULTS | streaming_options)),
            "limits": LimitsSettings(**limits_options),
        }
    )


# -- the gateway -----------------------------------------------------------------------------------


@dataclass
class ChatGateway:
    """The served gateway, its settings, an HTTP client checked against /openapi.json, and the host."""

    served: Served
    settings: Settings
    api: ServedAPI
    host: StreamingHost

    @property
    def app(self) -> Quart:
        return self.served.app

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def llms(self) -> TestLLMs:
        return self.host.llms

    def ws_url(self, path: str = WS_PATH, **query: str) -> str:
        """``ws://…`` URL of ``path`` with the query parameters given."""
        url = "ws" + self.url.removeprefix("http") + path
        return f"{url}?{urlencode(query)}" if query else url


@pytest_asyncio.fixture(name="chat_gateway")
async def chat_gateway_fixture(
    chat_settings: Settings, streaming_host: StreamingHost
) -> AsyncIterator[ChatGateway]:
    served = await start_served(create_app(chat_settings), chat_settings)
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            document = await client.get("/openapi.json")
            assert document.status_code == 200, document.text
            api = ServedAPI(client, OpenAPI.from_dict(json.loads(document.content)))
            yield ChatGateway(served, chat_settings, api, streaming_host)
    finally:
        await stop_served(served)


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class ChatUser:
    """A signed-in member of a fresh tenant and one of its API keys."""

    tenant: str
    tenant_id: str
    user_id: str
    #: ``Authorization`` header with the member's access token.
    headers: dict[str, str]
    access_token: str
    key: str
    key_id: str

    @property
    def key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def signed_in_key(gateway: ChatGateway, scopes: Sequence[str] = ("chat", "ingest", "read")) -> ChatUser:
    """A member of a fresh tenant (made by its admin), signed in, with an API key holding ``scopes``."""
    member = await new_member(gateway.settings, gateway.api)
    created = await gateway.api.post(
        "/v1/keys", json={"name": "streaming test", "scopes": list(scopes)}, headers=member.headers
    )
    assert created.status_code == 201, created.text
    token = member.headers["Authorization"].removeprefix("Bearer ")
    return ChatUser(
        member.tenant,
        member.tenant_id,
        member.user_id,
        member.headers,
        token,
        created.json()["key"],
        created.json()["id"],
    )


@dataclass
class Ingested:
    collection_id: str
    document_id: str
    job_id: str


async def ingest_text(
    gateway: ChatGateway,
    user: ChatUser,
    text: str,
    *,
    filename: str = "notes.txt",
    collection_id: str | None = None,
) -> Ingested:
    """Upload ``text`` as ``filename`` over REST and wait until its ingestion job succeeded."""
    api, headers = gateway.api, user.key_headers
    if collection_id is None:
        created = await api.post(
            "/v1/collections", json={"name": f"docs-{uuid.uuid4().hex[:8]}"}, headers=headers
        )
        assert created.status_code == 201, created.text
        collection_id = str(created.json()["id"])
    upload = await api.post(
        f"/v1/collections/{collection_id}/documents",
        files={"file": (filename, text.encode(), "text/plain")},
        headers=headers,
    )
    assert upload.status_code == 202, upload.text
    job_id = str(upload.json()["job"]["id"])
    async with asyncio.timeout(30):
        while True:
            job = await api.get(f"/v1/jobs/{job_id}", headers=headers)
            assert job.status_code == 200, job.text
            if job.json()["finished"]:
                break
            await asyncio.sleep(0.05)
    assert job.json()["status"] == "succeeded", job.json()
    listed = await api.get(f"/v1/collections/{collection_id}/documents", headers=headers)
    [document] = [d for d in listed.json()["documents"] if d["source"] == filename]
    assert document["status"] == "ready", document
    return Ingested(collection_id, str(document["id"]), job_id)


def ws_connect(
    gateway: ChatGateway,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    max_size: int | None = 16 * 1024 * 1024,
    **options: Any,
) -> connect:
    """A ``websockets`` connection to ``/v1/chat/ws`` (``async with``), with ``key`` as bearer."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return connect(
        gateway.ws_url(**(query or {})),
        additional_headers=sent,
        max_size=max_size,
        open_timeout=10,
        **options,
    )


async def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:  # noqa: ASYNC109
    """The next message, decoded; heartbeats included."""
    async with asyncio.timeout(timeout):
        message = await ws.recv()
    decoded: dict[str, Any] = json.loads(message)
    return decoded


async def read_turn(ws: ClientConnection, timeout: float = 30) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """The events (messages with a ``seq``) up to and including ``done``; heartbeats are skipped."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await receive(ws, timeout)
            if "seq" not in message:
                continue
            events.append(message)
            if message["type"] == "done":
                return events
