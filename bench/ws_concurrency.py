"""Benchmark: N concurrent WebSocket chat streams held against the gateway, one turn each.

    .venv/bin/python bench/ws_concurrency.py [--streams 100,500,1000] [--timeout 120]
                                             [--client-processes 2] [--connect-concurrency 100]
                                             [--no-retrieval] [--compression deflate|none]
                                             [--set SECTION.KEY=VALUE ...] [--documents 12]
                                             [--ingest-while 200]

The real stack on loopback (bench/stack.py): the embedded PostgreSQL in a scratch folder under /tmp (or
the server of OPENTIER_BENCH_DATABASE_URL), ``opentier host serve`` and ``opentier gateway serve`` as
separate processes, with their default settings but the request rate limits (off: every client is
127.0.0.1 with one API key) and what ``--set`` changes (e.g. ``--set database.pool_size=20``, for
both); an admin, an API key and ``--documents`` generated texts ingested through the REST API. The
answerer is the offline default, ``extractive``, with retrieval (hybrid, minilm) unless
``--no-retrieval``.

For each N of ``--streams``, the clients run in ``--client-processes`` processes of their own (this
process only watches): each opens its share of the N WebSockets to ``/v1/chat/ws`` (at most
``--connect-concurrency`` handshakes in flight per process, permessage-deflate offered as browsers
do unless ``--compression none``) and waits for ``hello`` on each; once every stream of every process
is open, all of them send ``start`` at once and read their turn to ``done``. Meanwhile this process
samples the gateway's and the host's RSS (psutil, every 50 ms) and reads the CPU time each part used.
With ``--ingest-while D`` (default 200; 0: none), the moment the turns start this process also uploads
D generated documents (one JSON Lines file, one job) into a fresh collection through the REST API and
waits for the job: ingestion competing with the chat streams for the same host, database and cores.

Printed per N: streams done with status complete; errors by kind (``connect:<reason>``, ``close:<code>``
for a connection closed before ``done``, ``error:<code>`` for an error event, ``status:<status>`` for
another end, ``timeout`` when ``--timeout`` seconds passed first); p50 of the connect time (to
``hello``); p50 and p99 of the time to first token (from ``start`` sent to the first ``token``); total
tokens/s (the host's ``usage.output_tokens`` of the complete streams over the time from the starts to
the last ``done``); the gateway's and the host's RSS before the round and at its peak; the CPU seconds
of gateway, host, PostgreSQL and client processes in the round (which shows what was busy), and the
gateway's CPU per stream, opening and in the turn; and the ingestion's outcome and duration.
Goal: 1,000 streams, zero errors, the ingestion succeeded. The machine may
be shared: figures are noisy. ``OPENTIER_BENCH_KEEP=1`` keeps the host's and the gateway's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Account, Stack, corpus

WORKER_ENV = "OPENTIER_BENCH_WS_WORKER"
SCRIPT = str(Path(__file__).resolve())
GOAL_STREAMS = 1000
SAMPLE_SECONDS = 0.05

# -- a client process -----------------------------------------------------------------------------------


@dataclass
class Stream:
    """One WebSocket and its turn, as a client process sees them."""

    question: str
    ws: ClientConnection | None = None
    connect_ms: float | None = None
    first_token_ms: float | None = None
    output_tokens: int = 0
    ended_at: float | None = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "connect_ms": self.connect_ms,
            "ttft_ms": self.first_token_ms,
            "tokens": self.output_tokens,
            "ended_at": self.ended_at,
            "error": self.error,
        }


async def open_stream(stream: Stream, config: dict[str, Any], gate: asyncio.Semaphore) -> None:
    async with gate:
        began = time.perf_counter()
        try:
            ws = await connect(
                config["url"],
                additional_headers={"Authorization": f"Bearer {config['key']}"},
                open_timeout=config["timeout"],
                ping_interval=None,
                compression=None if config["compression"] == "none" else "deflate",
            )
        except InvalidStatus as err:
            stream.error = f"connect:http {err.response.status_code}"
            return
        except (OSError, TimeoutError) as err:
            stream.error = f"connect:{type(err).__name__}"
            return
        try:
            async with asyncio.timeout(config["timeout"]):
                hello = json.loads(await ws.recv())
        except ConnectionClosed as err:
            stream.error = f"close:{err.rcvd.code if err.rcvd else 'none'}"
            return
        except TimeoutError:
            stream.error = "connect:no hello"
            await ws.close()
            return
        if hello.get("type") != "hello":
            stream.error = f"connect:{hello.get('type')} {hello.get('code', '')}".strip()
            await ws.close()
            return
        stream.ws = ws
        stream.connect_ms = (time.perf_counter() - began) * 1000


async def run_turn(stream: Stream, config: dict[str, Any]) -> None:
    ws = stream.ws
    assert ws is not None
    start: dict[str, Any] = {"type": "start", "message": stream.question}
    if config["collection_id"]:
        start["collection_ids"] = [config["collection_id"]]
    started = False
    began = time.perf_counter()
    try:
        await ws.send(json.dumps(start))
        while True:
            event = json.loads(await ws.recv())
            kind = event.get("type")
            if kind == "started":
                started = True
            elif kind == "token" and stream.first_token_ms is None:
                stream.first_token_ms = (time.perf_counter() - began) * 1000
            elif kind == "usage":
                stream.output_tokens = int(event.get("output_tokens", 0))
            elif kind == "error":
                stream.error = stream.error or f"error:{event.get('code')}"
                if not started:  # refused before it started: no `done` follows
                    break
            elif kind == "done":
                stream.ended_at = time.time()
                if event.get("status") != "complete" and stream.error is None:
                    stream.error = f"status:{event.get('status')}"
                break
    except ConnectionClosed as err:
        if stream.error is None:
            stream.error = f"close:{err.rcvd.code if err.rcvd else 'none'}"
        return
    await ws.close()


async def worker(config: dict[str, Any]) -> None:
    """Open the streams, say how many are open, wait for ``go`` on stdin, run every turn, print the
    records as one JSON line."""
    cpu_began = time.process_time()
    questions: list[str] = config["questions"]
    streams = [Stream(questions[i % len(questions)]) for i in range(config["count"])]
    gate = asyncio.Semaphore(config["connect_concurrency"])
    await asyncio.gather(*(open_stream(s, config, gate) for s in streams))
    print(json.dumps({"ready": sum(s.ws is not None for s in streams)}), flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "go":
        return
    tasks = [asyncio.create_task(run_turn(s, config)) for s in streams if s.ws is not None]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=config["timeout"])
        for task in pending:
            task.cancel()
        for stream in streams:
            if stream.ws is not None and stream.ended_at is None and stream.error is None:
                stream.error = "timeout"
        await asyncio.gather(*pending, return_exceptions=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(s.ws.close() for s in streams if s.ws is not None), return_exceptions=True), 10
        )
    records = [s.record() for s in streams]
    print(json.dumps({"streams": records, "cpu": time.process_time() - cpu_began}), flush=True)


# -- the watching process -------------------------------------------------------------------------------


@dataclass
class Watch:
    """Peak RSS of the gateway and the host, sampled while a round runs."""

    processes: dict[str, list[psutil.Process]]
    before: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)

    def rss(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for name in ("gateway", "host"):
            with contextlib.suppress(psutil.Error, KeyError, IndexError):  # several hosts: their sum
                found[name] = sum(p.memory_info().rss for p in self.processes[name]) / 2**20
        return found

    async def sample(self) -> None:
        self.before = self.rss()
        self.peak = dict(self.before)
        while True:
            for name, value in self.rss().items():
                self.peak[name] = max(self.peak.get(name, 0.0), value)
            await asyncio.sleep(SAMPLE_SECONDS)


def cpu_seconds(parts: dict[str, list[psutil.Process]]) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) used so far by each process of each part, by pid."""
    found: dict[str, dict[int, float]] = {}
    for name, processes in parts.items():
        found[name] = {}
        for process in processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                found[name][process.pid] = times.user + times.system
    return found


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each part used between two readings (processes started between them count whole;
    those that ended between them are missed)."""
    return {
        name: sum(seconds - before.get(name, {}).get(pid, 0.0) for pid, seconds in pids.items())
        for name, pids in after.items()
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Round:
    streams: int
    records: list[dict[str, Any]]
    opened: float
    started_at: float
    rss_before: dict[str, float]
    rss_peak: dict[str, float]
    cpu: dict[str, float]
    ingestion: dict[str, Any] | None = None

    def errors(self) -> Counter[str]:
        return Counter(r["error"] for r in self.records if r["error"])


async def ingest_during(stack: Stack, account: Account, documents: int, seed: int) -> dict[str, Any]:
    """Upload ``documents`` generated texts as one JSON Lines file into a new collection and wait for
    the job; what happened and how long it took."""
    texts = corpus(documents, seed=seed).documents
    body = "".join(json.dumps({"id": name, "title": name, "text": text}) + "\n" for name, text in texts)
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60, headers=account.headers) as client:
        try:
            made = await client.post("/v1/collections", json={"name": f"load-{seed}-{time.time_ns()}"})
            made.raise_for_status()
            accepted = await client.post(
                f"/v1/collections/{made.json()['id']}/documents",
                files={"file": ("load.jsonl", body.encode(), "application/jsonl")},
            )
            accepted.raise_for_status()
            job_id = accepted.json()["job"]["id"]
            while True:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                if job.get("finished"):
                    break
                if time.perf_counter() - began > 600:
                    seconds = time.perf_counter() - began
                    return {"status": "timeout", "seconds": seconds, "documents": documents}
                await asyncio.sleep(0.2)
            counts = job.get("counts", {})
            if counts.get("failed"):
                failed = await client.get(
                    f"/v1/collections/{made.json()['id']}/documents", params={"status": "failed"}
                )
                print(f"ingestion failures: {failed.text[:800]}", flush=True)
        except httpx.HTTPError as err:
            return {"status": f"error: {err}", "seconds": time.perf_counter() - began, "documents": documents}
    return {
        "status": job.get("status"),
        "seconds": time.perf_counter() - began,
        "documents": documents,
        "created": counts.get("created", 0),
        "failed": counts.get("failed", 0),
        "chunks": counts.get("chunks_written", 0),
    }


async def one_round(
    stack: Stack, account: Account, count: int, args: argparse.Namespace, questions: list[str]
) -> Round:
    processes = stack.processes()
    watch = Watch(processes)
    sampler = asyncio.create_task(watch.sample())
    shares = [
        count // args.client_processes + (i < count % args.client_processes)
        for i in range(args.client_processes)
    ]
    shares = [share for share in shares if share]
    base = {
        "url": f"{stack.ws_url}/v1/chat/ws",
        "key": account.key,
        "collection_id": "" if args.no_retrieval else account.collection_id,
        "timeout": args.timeout,
        "connect_concurrency": args.connect_concurrency,
        "compression": args.compression,
    }
    cpu_start = cpu_seconds(processes)
    opening = time.perf_counter()
    workers: list[asyncio.subprocess.Process] = []
    for index, share in enumerate(shares):
        config = base | {"count": share, "questions": questions[index :: len(shares)] or questions}
        workers.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                SCRIPT,
                env=os.environ | {WORKER_ENV: json.dumps(config)},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=64 * 2**20,
            )
        )
    try:
        async with asyncio.timeout(args.timeout + 30):
            for process in workers:
                assert process.stdout is not None
                json.loads(await process.stdout.readline())
        opened = time.perf_counter() - opening
        cpu_opened = cpu_seconds(stack.processes())
        started_at = time.time()
        for process in workers:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        ingesting = (
            asyncio.create_task(ingest_during(stack, account, args.ingest_while, seed=count))
            if args.ingest_while
            else None
        )
        records: list[dict[str, Any]] = []
        client_cpu = 0.0
        async with asyncio.timeout(args.timeout + 60):
            for process in workers:
                assert process.stdout is not None
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError(f"a client process exited with {await process.wait()}")
                answer = json.loads(line)
                records += answer["streams"]
                client_cpu += answer["cpu"]
        ingestion = await ingesting if ingesting is not None else None
        cpu_ended = cpu_seconds(stack.processes())
        cpu = cpu_used(cpu_start, cpu_ended)
        cpu["clients"] = client_cpu
        cpu["gateway opening"] = cpu_used(cpu_start, cpu_opened).get("gateway", 0.0)
        cpu["gateway turns"] = cpu_used(cpu_opened, cpu_ended).get("gateway", 0.0)
    finally:
        sampler.cancel()
        for process in workers:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
    return Round(count, records, opened, started_at, watch.before, watch.peak, cpu, ingestion)


HEADER = (
    f"{'streams':>7} {'complete':>8} {'errors':>6} {'connect p50':>11} {'TTFT p50':>9} {'TTFT p99':>9} "
    f"{'tokens/s':>9} {'gateway RSS MB':>15} {'host RSS MB':>13} {'CPU s gw/host/pg/clients':>25}"
)


def print_round(result: Round) -> None:
    records = result.records
    ok = [r for r in records if r["error"] is None]
    ttfts = [r["ttft_ms"] for r in records if r["ttft_ms"] is not None]
    connects = [r["connect_ms"] for r in records if r["connect_ms"] is not None]
    ends = [r["ended_at"] for r in ok if r["ended_at"] is not None]
    span = max(ends) - result.started_at if ends else float("nan")
    tokens = sum(r["tokens"] for r in ok)
    rate = tokens / span if ends and span > 0 else float("nan")

    def rss(name: str) -> str:
        return f"{result.rss_before.get(name, 0):.0f}->{result.rss_peak.get(name, 0):.0f}"

    cpu = "/".join(f"{result.cpu.get(n, 0.0):.1f}" for n in ("gateway", "host", "postgres", "clients"))
    print(
        f"{result.streams:>7} {len(ok):>8} {len(records) - len(ok):>6} {percentile(connects, 0.5):>8.1f} ms "
        f"{percentile(ttfts, 0.5):>6.0f} ms {percentile(ttfts, 0.99):>6.0f} ms {rate:>9.0f} "
        f"{rss('gateway'):>15} {rss('host'):>13} {cpu:>25}"
    )
    errors = result.errors()
    if errors:
        listed = ", ".join(f"{kind} x{n}" for kind, n in errors.most_common())
        print(f"{'':>7} errors: {listed}")
    per_stream = 1000 / result.streams
    print(
        f"{'':>7} streams opened in {result.opened:.1f} s, turns done {span:.1f} s after the starts, "
        f"{tokens} tokens; gateway CPU per stream: {result.cpu['gateway opening'] * per_stream:.1f} ms "
        f"opening, {result.cpu['gateway turns'] * per_stream:.1f} ms in the turn",
        flush=True,
    )
    if result.ingestion is not None:
        done = result.ingestion
        rate = done["documents"] / done["seconds"] if done["seconds"] else float("nan")
        print(
            f"{'':>7} ingestion while chatting: {done['documents']} documents, job {done['status']}, "
            f"{done.get('created', 0)} created, {done.get('failed', 0)} failed, {done.get('chunks', 0)} "
            f"chunks in {done['seconds']:.1f} s ({rate:.1f} docs/s)",
            flush=True,
        )


async def watch_rounds(
    args: argparse.Namespace, stack: Stack, account: Account, questions: list[str]
) -> None:
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    met = False
    for count in args.streams:
        result = await one_round(stack, account, count, args, questions)
        print_round(result)
        ingested = result.ingestion is None or result.ingestion["status"] == "succeeded"
        met = met or (count >= GOAL_STREAMS and not result.errors() and ingested)
        for name in ("gateway", "host"):
            process = getattr(stack, name)
            if process is not None and process.poll() is not None:
                print(f"the {name} exited with {process.returncode}:\n{stack.log_tail(name)}")
                return
        await asyncio.sleep(2)
    print(f"\ngoal: {GOAL_STREAMS} streams, zero errors, ingestion done: {'met' if met else 'NOT met'}")


def setting(value: str) -> tuple[str, str]:
    """``database.pool_size=20`` → ``("OPENTIER_DATABASE__POOL_SIZE", "20")``."""
    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {value!r}")
    return "OPENTIER_" + key.strip().upper().replace(".", "__"), raw


def streams_list(value: str) -> list[int]:
    return [int(part) for part in value.replace(" ", "").split(",") if part]


def main() -> None:
    if WORKER_ENV in os.environ:
        uvloop.run(worker(json.loads(os.environ[WORKER_ENV])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", type=streams_list, default=[100, 500, 1000], help="comma-separated stream counts"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a round's turns may take (and its connects)"
    )
    parser.add_argument("--client-processes", type=int, default=2, help="processes running the clients")
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="WebSocket handshakes in flight per process"
    )
    parser.add_argument("--no-retrieval", action="store_true", help="chat without a collection")
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="permessage-deflate offered by the clients (as browsers do), or not",
    )
    parser.add_argument("--documents", type=int, default=12, help="generated documents to ingest")
    parser.add_argument(
        "--hosts", type=int, default=1, help="host processes, the gateway spreading turns over them"
    )
    parser.add_argument(
        "--ingest-while",
        type=int,
        default=200,
        metavar="D",
        help="documents ingested (one job) while each round's turns run; 0: none",
    )
    parser.add_argument(
        "--set",
        type=setting,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a setting of the host and the gateway, e.g. database.pool_size=20 (repeatable)",
    )
    args = parser.parse_args()
    texts = corpus(args.documents)
    with Stack(env=dict(args.set), hosts=args.hosts) as stack:
        account = stack.account()
        counts = stack.ingest(account, texts.documents)
        retrieval = "no retrieval" if args.no_retrieval else f"retrieval over {counts['chunks']} chunks"
        print(
            f"stack: PostgreSQL, {args.hosts} host(s), gateway as separate processes on loopback; "
            f"extractive, {retrieval}; "
            f"{args.client_processes} client processes; compression {args.compression}; "
            f"timeout {args.timeout:g} s per round"
            + "".join(f"; {key}={value}" for key, value in args.set)
            + "\n",
            flush=True,
        )
        uvloop.run(watch_rounds(args, stack, account, texts.questions))


if __name__ == "__main__":
    main()
