"""Benchmark: the chat path inside the host against the model called directly, in the same run.

    .venv/bin/python bench/chat.py [--runs 10] [--tokens 100] [--rate 200] [--first-token-ms 50]

A temporary embedded PostgreSQL (or OPENTIER_BENCH_DATABASE_URL) gets a small text ingested by the
real pipeline (the installed `minilm` embedder; the `hybrid` retriever when `fulltext` is installed,
else `vector`). Then, for each model, three ways to get the same answer, each measured ``--runs``
times after one warm-up:

- direct: ``llm.stream(request)`` with exactly the request the chat path builds (same sources);
- engine: :meth:`Chat.start` + :meth:`Turn.events` in the host process: the user message stored,
  retrieval (query embedding + pgvector), the prompt, citations verified, the answer stored;
- grpc: a client of the real host's ChatService over a loopback channel (what the gateway sees).

Models: ``paced`` (a fixed-rate model: first token after ``--first-token-ms``, then ``--rate``
tokens/s, ``--tokens`` tokens, each answer citing [1]) and ``extractive`` (the offline default, when
installed; skipped with a message otherwise).

Printed per model and path (p50 of the runs): time to first token (from the request to the first
text), tokens/s (answer tokens over the time from the first to the last text) and the whole answer's
time, with the ratios of the chat paths to the direct call. ``extractive`` computes its whole answer
before its first piece and then sends it at once, so its tokens/s only says that the host adds a
little per piece; its first token and answer times are the figures that matter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc.aio
from sqlalchemy.engine import make_url

from opentier import hookimpl
from opentier.components import LLM, ComponentKind, LLMEvent, LLMRequest, SearchQuery, TextDelta, Usage
from opentier.config import ChatSettings, HostSettings, IngestionSettings, RetrievalSettings, Settings
from opentier.db.embedded import EmbeddedPostgres
from opentier.db.migrate import migrate
from opentier.db.tenancy import enter_tenant
from opentier.engine.chat import Owner, TurnRequest
from opentier.engine.chat.events import Token
from opentier.engine.chat.prompt import build_prompt
from opentier.engine.jobs import ItemSpec, JobOptions
from opentier.generated.intelligence.v1 import chat_pb2, chat_pb2_grpc, common_pb2
from opentier.host.auth import bearer_metadata
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins

TOKEN = "bench-chat-host-token-0123456789"
TENANT = "bench"
QUESTION = "Why does a wing stall at a high angle of attack?"
TEXT = """\
A wing makes lift by turning the air that flows past it downwards. The air over the curved upper
surface speeds up and its pressure drops, while the pressure under the wing rises a little.

The angle between the wing and the oncoming air is the angle of attack. Lift grows with the angle of
attack, up to a point.

Beyond the critical angle of attack, the air can no longer follow the upper surface. The flow
separates from the wing, lift falls sharply and drag rises: the wing stalls. A stall depends on the
angle of attack, not on the speed; a wing can stall at any speed.

Flaps and slats change the shape of the wing. They let it fly slower before it stalls, which pilots
use for take-off and landing.

Drag is the force that resists the motion of the aircraft through the air. Induced drag comes with
lift itself and is largest at low speed; parasite drag grows with the square of the speed.

Jet engines push hot gas backwards at high speed, and the reaction pushes the aircraft forwards.
Propellers do the same with a larger mass of air moved more slowly.
"""


class PacedLLM(LLM):
    """A fixed-rate model: first text after ``first_token`` seconds, then ``rate`` tokens per second."""

    name = "paced"
    context_window = 8192

    def __init__(self, tokens: int, rate: float, first_token: float) -> None:
        self.tokens, self.rate, self.first_token = tokens, rate, first_token

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        began = time.perf_counter()
        for index in range(self.tokens):
            due = began + self.first_token + index / self.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            yield TextDelta("lift[1] " if index % 10 == 9 else "lift ")
        yield Usage(
            input_tokens=sum(self.count_tokens(m.content) for m in request.messages),
            output_tokens=self.tokens,
        )


@dataclass
class Sample:
    first_token: float
    tokens_per_second: float
    total: float


def sample(began: float, stamps: list[float], tokens: int) -> Sample:
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    return Sample(stamps[0] - began, tokens / span if span > 0 else float("nan"), stamps[-1] - began)


async def direct(llm: LLM, request: LLMRequest) -> Sample:
    stamps: list[float] = []
    text: list[str] = []
    began = time.perf_counter()
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            stamps.append(time.perf_counter())
            text.append(event.text)
    return sample(began, stamps, llm.count_tokens("".join(text)))


async def engine_path(runtime: HostRuntime, llm: LLM, collection_id: str) -> Sample:
    stamps: list[float] = []
    text: list[str] = []
    began = time.perf_counter()
    turn = await runtime.chat.start(
        TurnRequest(tenant_id=TENANT, message=QUESTION, collection_ids=[collection_id], llm=llm.name)
    )
    async for event in turn.events():
        if isinstance(event, Token):
            stamps.append(time.perf_counter())
            text.append(event.text)
    return sample(began, stamps, llm.count_tokens("".join(text)))


async def grpc_path(stub: chat_pb2_grpc.ChatServiceAsyncStub, llm: LLM, collection_id: str) -> Sample:
    stamps: list[float] = []
    text: list[str] = []
    request = chat_pb2.ChatRequest(
        caller=common_pb2.Caller(tenant_id=TENANT, user_id="bench"),
        start=chat_pb2.ChatStart(message=QUESTION, collection_ids=[collection_id], llm=llm.name),
    )

    async def requests() -> AsyncIterator[chat_pb2.ChatRequest]:
        yield request

    began = time.perf_counter()
    async for event in stub.Chat(requests(), metadata=bearer_metadata(TOKEN)):
        if event.HasField("token"):
            stamps.append(time.perf_counter())
            text.append(event.token.text)
    return sample(began, stamps, llm.count_tokens("".join(text)))


async def measure(runs: int, once: Callable[[], Awaitable[Sample]]) -> list[Sample]:
    await once()  # warm-up: caches, connections, the embedder's first call
    return [await once() for _ in range(runs)]


def plugin(*llms: LLM) -> object:
    @hookimpl
    def register_llms(register: Callable[[LLM], None]) -> None:
        for llm in llms:
            register(llm)

    return SimpleNamespace(register_llms=register_llms)


def settings_for(url: str, data_dir: Path, retriever: str) -> Settings:
    parsed = make_url(url)
    database: dict[str, object] = {
        "url": parsed._replace(password=None).render_as_string(hide_password=False)
    }
    if parsed.password:
        database["password"] = parsed.password
    return Settings(
        data_dir=data_dir,
        database=database,  # type: ignore[arg-type]
        host=HostSettings(port=0, token=TOKEN),
        ingestion=IngestionSettings(
            embedder="minilm", cleaners=["whitespace"], chunk_tokens=64, chunk_overlap_tokens=8
        ),
        retrieval=RetrievalSettings(retriever=retriever, top_k=4),
        chat=ChatSettings(llm="paced", allowed_llms=["*"], rewrite="off"),
    )


async def run(args: argparse.Namespace, url: str, data_dir: Path) -> None:
    await migrate(url)
    paced = PacedLLM(args.tokens, args.rate, args.first_token_ms / 1000)
    plugins = load_plugins(
        selection=PluginSelection(
            allow=["text", "basic-cleaners", "minilm", "vector", "fulltext", "hybrid", "extractive"]
        ),
        extra=[("bench", plugin(paced))],
    )
    registry = plugins.registry
    retrievers = registry.names(ComponentKind.RETRIEVER)
    retriever = "hybrid" if {"hybrid", "fulltext"} <= set(retrievers) else "vector"
    settings = settings_for(url, data_dir, retriever)
    runtime = HostRuntime(settings, registry)
    server = HostServer(settings, plugins, TOKEN, runtime=runtime)
    await server.start()
    enter_tenant(TENANT)  # the runtime is called directly, not through a gRPC call that would set it
    try:
        collection = await runtime.collections.create(TENANT, f"bench-{uuid.uuid4().hex[:8]}")
        job = await runtime.ingestion.create_job(
            TENANT,
            collection.id,
            {"stream": True},
            JobOptions(),
            [ItemSpec("text", "aerodynamics.txt", payload=TEXT.encode(), details={"title": "Aerodynamics"})],
        )
        done = await runtime.ingestion.wait(TENANT, job.id)
        assert done.status == "succeeded", done
        collection_id = str(collection.id)
        hits = await runtime.search.search(
            SearchQuery(text=QUESTION, tenant_id=TENANT, collection_ids=[collection_id], top_k=4),
            retriever=retriever,
        )
        print(
            f"retriever {retriever}, {done.counts.chunks_written} chunks, {len(hits)} sources per answer, "
            f"{args.runs} runs per path after one warm-up; p50 values\n"
        )
        llms: list[LLM] = [paced]
        if "extractive" in registry.names(ComponentKind.LLM):
            llms.append(registry.get_typed(LLM, "extractive"))
        else:
            print("extractive: skipped (the opentier-llm-extractive plugin is not installed)\n")
        header = (
            f"{'model':<11} {'path':<7} {'first token ms':>15} {'tokens/s':>10} {'answer ms':>10}   vs direct"
        )
        print(header)
        print("-" * len(header))
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            for llm in llms:
                prompt = build_prompt(
                    llm,
                    settings.chat,
                    QUESTION,
                    [],
                    hits,
                    max_output_tokens=settings.chat.max_output_tokens,
                    temperature=settings.chat.temperature,
                )
                results = {
                    "direct": await measure(
                        args.runs, lambda llm=llm, request=prompt.request: direct(llm, request)
                    ),
                    "engine": await measure(
                        args.runs, lambda llm=llm: engine_path(runtime, llm, collection_id)
                    ),
                    "grpc": await measure(args.runs, lambda llm=llm: grpc_path(stub, llm, collection_id)),
                }
                base_first = statistics.median(s.first_token for s in results["direct"])
                base_rate = statistics.median(s.tokens_per_second for s in results["direct"])
                base_total = statistics.median(s.total for s in results["direct"])
                for path, samples in results.items():
                    first = statistics.median(s.first_token for s in samples)
                    rate = statistics.median(s.tokens_per_second for s in samples)
                    total = statistics.median(s.total for s in samples)
                    versus = ""
                    if path != "direct":
                        versus = (
                            f"first token x{first / base_first:.2f} (+{(first - base_first) * 1000:.1f} ms), "
                            f"tokens/s x{rate / base_rate:.2f}, answer x{total / base_total:.2f}"
                        )
                    print(
                        f"{llm.name:<11} {path:<7} {first * 1000:>15.2f} {rate:>10.0f} "
                        f"{total * 1000:>10.1f}   {versus}"
                    )
        conversations = await runtime.conversations.list(Owner(TENANT), page_size=1)
        assert conversations.items, "the chat path stored no conversation"
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="measured answers per model and path")
    parser.add_argument("--tokens", type=int, default=100, help="tokens of each paced answer")
    parser.add_argument("--rate", type=float, default=200.0, help="tokens per second of the paced model")
    parser.add_argument(
        "--first-token-ms", type=float, default=50.0, help="the paced model's first-token delay"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opentier-bench-chat-") as folder:
        external = os.environ.get("OPENTIER_BENCH_DATABASE_URL")
        if external:
            asyncio.run(run(args, external, Path(folder)))
            return
        server = EmbeddedPostgres(Path(folder) / "pg", database="bench")
        server.start()
        try:
            asyncio.run(run(args, server.url().render_as_string(hide_password=False), Path(folder)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
