"""Benchmark: a chat turn streamed through the gateway's WebSocket against the host's gRPC Chat called
directly, same questions, interleaved, in the same run.

    .venv/bin/python bench/gateway_stream.py [--turns 20] [--warm-up 2] [--tokens 100] [--rate 200]
                                             [--first-token-ms 50] [--documents 12]

The real stack on loopback (bench/stack.py): the embedded PostgreSQL in a scratch folder under /tmp (or
the server of OPENTIER_BENCH_DATABASE_URL), the intelligence host and the gateway (``opentier gateway
serve``, Hypercorn on uvloop) as separate processes; an admin made by ``opentier gateway create-admin``,
an API key, and ``--documents`` generated texts ingested through the REST API (minilm, the hybrid
retriever). This process is the client of both paths, one turn at a time (sequential, warm):

- direct: the host's ``ChatService/Chat`` over one loopback gRPC channel kept open, with the host token
  and the Caller (tenant, user) the gateway would send for the API key's user;
- gateway: ``/v1/chat/ws`` with the API key, one WebSocket kept open for every turn (the protocol allows
  several turns in sequence); compression as the client library negotiates it, as browsers do.

For each model, ``--warm-up`` turns per path, then ``--turns`` turns per path: question i goes to both
paths, direct first for even i and gateway first for odd i. Time to first token (TTFT) is from sending
the start to the first ``token`` event; tokens/s is the host's ``usage.output_tokens`` over the time from
the first to the last token event. Each new turn starts a new conversation, with retrieval.

Models: ``paced`` (first token after ``--first-token-ms``, then ``--rate`` words/s, ``--tokens`` words,
one per delta), for which tokens/s means something, and ``extractive`` (the offline default), which
computes its answer before its first piece and sends it at once: its TTFT is the figure that counts.

Why the paced model runs in a host *process* (``python bench/stack.py host``, the same HostServer as
``opentier host serve`` plus one plugin registered as tests register theirs) rather than in a thread of
this process: the direct client would then share this process's interpreter and event loop with the
host it measures, while the gateway path would not, so the two paths would be timed unequally. As
separate processes, the only difference between the paths is the gateway hop.

Printed per model and path: p50/p95 TTFT, p50 tokens/s, p50 answer time (start to ``done``), p50 time
from the last token to ``done`` and token events per answer (pieces); then the added p50 TTFT of the
gateway (ms; and, less noisy, the median of the differences of the two paths' turns of one question)
and the ratio of tokens/s (gateway/direct) beside the goals: <= 3 ms added p50 TTFT, >= 0.95 tokens/s
ratio. The machine may be shared: figures are
noisy, ratios of one run are what to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import uvloop
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Account, Paced, Stack, corpus

from opentier.generated.intelligence.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    common_pb2,
    conversations_pb2,
)
from opentier.host.auth import bearer_metadata

GOAL_ADDED_TTFT_MS = 3.0
GOAL_RATE_RATIO = 0.95
PATHS = ("direct", "gateway")


@dataclass(frozen=True, slots=True)
class Sample:
    first_token: float
    tokens_per_second: float
    total: float
    output_tokens: int
    pieces: int
    tail: float
    text: str


def sample(began: float, stamps: list[float], output_tokens: int, text: str, ended: float) -> Sample:
    if not stamps:
        raise RuntimeError(f"the turn streamed no token (answer {text!r})")
    span = stamps[-1] - stamps[0]
    rate = output_tokens / span if span > 0 else float("nan")
    return Sample(
        stamps[0] - began, rate, ended - began, output_tokens, len(stamps), ended - stamps[-1], text
    )


class Direct:
    """The host's ChatService over one gRPC channel, as the gateway calls it."""

    def __init__(self, stack: Stack, account: Account) -> None:
        self.channel = grpc.aio.insecure_channel(stack.host_target)
        self.stub = chat_pb2_grpc.ChatServiceStub(self.channel)
        self.metadata = bearer_metadata(stack.host_token)
        self.account = account

    async def turn(self, question: str, llm: str) -> Sample:
        request = chat_pb2.ChatRequest(
            caller=common_pb2.Caller(
                tenant_id=self.account.tenant_id,
                user_id=self.account.user_id,
                scopes=["chat", "ingest", "read"],
                request_id=uuid.uuid4().hex,
            ),
            start=chat_pb2.ChatStart(message=question, collection_ids=[self.account.collection_id], llm=llm),
        )

        async def requests() -> AsyncIterator[chat_pb2.ChatRequest]:
            yield request

        stamps: list[float] = []
        text: list[str] = []
        output_tokens = 0
        status = None
        began = time.perf_counter()
        async for event in self.stub.Chat(requests(), metadata=self.metadata):
            kind = event.WhichOneof("event")
            if kind == "token":
                stamps.append(time.perf_counter())
                text.append(event.token.text)
            elif kind == "usage":
                output_tokens = event.usage.output_tokens
            elif kind == "error":
                raise RuntimeError(f"direct turn failed: {event.error.code}: {event.error.message}")
            elif kind == "done":
                status = event.done.status
        ended = time.perf_counter()
        if status != conversations_pb2.MESSAGE_STATUS_COMPLETE:
            raise RuntimeError(f"direct turn ended with status {status}")
        return sample(began, stamps, output_tokens, "".join(text), ended)

    async def close(self) -> None:
        await self.channel.close()


class Gateway:
    """One WebSocket to ``/v1/chat/ws``, kept for every turn; checks the protocol as it goes."""

    def __init__(self, ws: ClientConnection, account: Account) -> None:
        self.ws = ws
        self.account = account
        self.seq = 0

    @classmethod
    async def open(cls, stack: Stack, account: Account) -> Gateway:
        ws = await connect(f"{stack.ws_url}/v1/chat/ws", additional_headers=account.headers)
        hello = json.loads(await ws.recv())
        if hello.get("type") != "hello" or hello.get("protocol") != 1:
            raise RuntimeError(f"the gateway did not say hello: {hello}")
        return cls(ws, account)

    async def turn(self, question: str, llm: str) -> Sample:
        start = {"type": "start", "message": question, "collection_ids": [self.account.collection_id]}
        start["llm"] = llm
        stamps: list[float] = []
        text: list[str] = []
        output_tokens = 0
        began = time.perf_counter()
        await self.ws.send(json.dumps(start))
        while True:
            event: dict[str, Any] = json.loads(await self.ws.recv())
            kind = event.get("type")
            if kind in {"heartbeat", "pong"}:
                continue
            self.seq += 1
            if event.get("seq") != self.seq:
                raise RuntimeError(f"expected seq {self.seq}, got {event}")
            if kind == "token":
                stamps.append(time.perf_counter())
                text.append(event["text"])
            elif kind == "usage":
                output_tokens = int(event["output_tokens"])
            elif kind == "error":
                raise RuntimeError(f"gateway turn failed: {event}")
            elif kind == "done":
                ended = time.perf_counter()
                if event["status"] != "complete":
                    raise RuntimeError(f"gateway turn ended {event}")
                return sample(began, stamps, output_tokens, "".join(text), ended)

    async def close(self) -> None:
        await self.ws.close()


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def compare(
    llm: str, questions: list[str], warm_up: int, paths: dict[str, Callable[[str, str], Awaitable[Sample]]]
) -> dict[str, list[Sample]]:
    for question in questions[:warm_up]:
        for run in paths.values():
            await run(question, llm)
    results: dict[str, list[Sample]] = {name: [] for name in paths}
    for index, question in enumerate(questions[warm_up:]):
        order = list(paths) if index % 2 == 0 else list(reversed(paths))
        for name in order:
            results[name].append(await paths[name](question, llm))
    return results


@dataclass(frozen=True, slots=True)
class Row:
    first_p50: float
    first_p95: float
    rate: float
    total: float
    tail: float
    pieces: float

    @classmethod
    def of(cls, samples: list[Sample]) -> Row:
        firsts = [s.first_token * 1000 for s in samples]
        return cls(
            percentile(firsts, 0.5),
            percentile(firsts, 0.95),
            statistics.median(s.tokens_per_second for s in samples),
            statistics.median(s.total * 1000 for s in samples),
            statistics.median(s.tail * 1000 for s in samples),
            statistics.median(s.pieces for s in samples),
        )


HEADER = (
    f"{'model':<11} {'path':<8} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'tokens/s p50':>13} "
    f"{'answer ms p50':>14} {'last token->done ms':>20} {'pieces':>7}"
)


def report(llm: str, results: dict[str, list[Sample]]) -> None:
    rows = {path: Row.of(results[path]) for path in PATHS}
    for path, r in rows.items():
        print(
            f"{llm:<11} {path:<8} {r.first_p50:>12.2f} {r.first_p95:>12.2f} {r.rate:>13.0f} "
            f"{r.total:>14.1f} {r.tail:>20.2f} {r.pieces:>7.0f}"
        )
    added = rows["gateway"].first_p50 - rows["direct"].first_p50
    pairs = list(zip(results["gateway"], results["direct"], strict=True))
    paired = statistics.median((g.first_token - d.first_token) * 1000 for g, d in pairs)
    ratio = rows["gateway"].rate / rows["direct"].rate
    same = sum(g.text == d.text for g, d in pairs)
    verdict_ttft = "met" if added <= GOAL_ADDED_TTFT_MS else "NOT met"
    if llm == "paced":
        verdict_rate = "met" if ratio >= GOAL_RATE_RATIO else "NOT met"
        rate_note = f"tokens/s x{ratio:.3f} (goal >= {GOAL_RATE_RATIO}: {verdict_rate})"
    else:
        rate_note = f"tokens/s x{ratio:.3f} (not a rate: the answer comes at once)"
    print(
        f"{'':<11} gateway vs direct: p50 TTFT {added:+.2f} ms (goal <= {GOAL_ADDED_TTFT_MS:g} ms: "
        f"{verdict_ttft}; median of the paired differences {paired:+.2f} ms), {rate_note}; "
        f"same answer {same}/{len(pairs)}"
    )


async def measure(args: argparse.Namespace, stack: Stack, account: Account, questions: list[str]) -> None:
    direct = Direct(stack, account)
    gateway = await Gateway.open(stack, account)
    try:
        print(HEADER)
        print("-" * len(HEADER))
        for llm in ("paced", "extractive"):
            results = await compare(
                llm, questions, args.warm_up, {"direct": direct.turn, "gateway": gateway.turn}
            )
            report(llm, results)
    finally:
        await gateway.close()
        await direct.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=20, help="measured turns per model and path")
    parser.add_argument("--warm-up", type=int, default=2, help="unmeasured turns per model and path first")
    parser.add_argument("--tokens", type=int, default=100, help="words of each paced answer")
    parser.add_argument("--rate", type=float, default=200.0, help="words per second of the paced model")
    parser.add_argument(
        "--first-token-ms", type=float, default=50.0, help="the paced model's first-token delay"
    )
    parser.add_argument("--documents", type=int, default=12, help="generated documents to ingest")
    args = parser.parse_args()
    texts = corpus(args.documents)
    needed = args.warm_up + args.turns
    questions = (texts.questions * (needed // len(texts.questions) + 1))[:needed]
    with Stack(paced=Paced(args.tokens, args.rate, args.first_token_ms)) as stack:
        account = stack.account()
        counts = stack.ingest(account, texts.documents)
        print(
            f"stack: PostgreSQL, host, gateway as separate processes on loopback; {counts['documents']} "
            f"documents, {counts['chunks']} chunks; {args.turns} turns per model and path after "
            f"{args.warm_up} warm-up, interleaved; paced: {args.tokens} words at {args.rate:g}/s after "
            f"{args.first_token_ms:g} ms\n"
        )
        uvloop.run(measure(args, stack, account, questions))


if __name__ == "__main__":
    main()
