"""Benchmark: the query embeddings of N concurrent searches, each made alone against batched together.

    .venv/bin/python bench/query_embedding.py [--queries 1000] [--repeat 3] [--max-batch 64]

The offline MiniLM embedder, in this process. N short questions (generated, 8 to 20 words) are
embedded concurrently, as N chat turns starting together embed theirs: (a) **alone**, one
``embed([question])`` call each, which is what every search did before; (b) **batched**, through
``opentier.engine.coalesce.Coalescer``, what ``Search`` does now. Both runs are interleaved
``--repeat`` times; printed: wall time, the process's CPU time, model calls, and the ratios
batched / alone. The vectors of the two ways are compared (cosine), since padding in a batch must
not change them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins" / "models" / "minilm")]

from opentier_embedder_minilm import MiniLMEmbedder  # noqa: E402

from opentier.engine.coalesce import MAX_BATCH, Coalescer  # noqa: E402

#: The vocabulary of the generated questions (aerodynamics, as in the Cranfield collection).
WORDS = """
wing flap lift drag boundary layer laminar turbulent shock wave supersonic nozzle heat transfer pressure
gradient separation vortex panel buckling stress plate shell cylinder flutter compressible viscous
inviscid Mach number Reynolds stagnation point leading edge slender body
""".split()  # noqa: SIM905 - a word list reads better as text
OPENINGS = ("What is", "How does", "Why do", "When does", "Which method predicts", "Is there")


def questions(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(OPENINGS)} {' '.join(rng.choices(WORDS, k=rng.randint(6, 18)))}?" for _ in range(count)
    ]


async def concurrently(
    embed_one: Callable[[str], Awaitable[list[float]]], texts: Sequence[str]
) -> list[list[float]]:
    return list(await asyncio.gather(*(embed_one(text) for text in texts)))


async def one_round(
    model: MiniLMEmbedder, texts: Sequence[str], batched: bool, max_batch: int
) -> tuple[float, float, int, list[list[float]]]:
    """(wall seconds, CPU seconds, model calls, vectors)."""
    calls = 0

    async def alone(text: str) -> list[float]:
        nonlocal calls
        calls += 1
        return (await model.embed([text]))[0]

    coalescer = Coalescer(model.embed, max_batch=max_batch)
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = await concurrently(coalescer.embed_one if batched else alone, texts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, coalescer.calls if batched else calls, vectors


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=1000, help="concurrent questions")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of each way")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="most texts in one batched call")
    args = parser.parse_args()
    texts = questions(args.queries)
    model = MiniLMEmbedder()
    await model.embed(["warm up the model"])
    results: dict[str, list[tuple[float, float, int]]] = {"alone": [], "batched": []}
    vectors: dict[str, list[list[float]]] = {}
    for _ in range(args.repeat):
        for way in ("alone", "batched"):
            wall, cpu, calls, found = await one_round(model, texts, way == "batched", args.max_batch)
            results[way].append((wall, cpu, calls))
            vectors[way] = found
    a, b = np.asarray(vectors["alone"]), np.asarray(vectors["batched"])
    cosine = float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    print(
        f"{args.queries} concurrent questions, MiniLM ({model.parallel_runs} parallel runs), "
        f"{args.repeat} rounds"
    )
    print(
        f"{'way':8} {'wall s (median)':>16} {'CPU s (median)':>15} {'model calls':>12} {'wall ms/query':>13}"
    )
    medians = {}
    for way, rows in results.items():
        wall = statistics.median(row[0] for row in rows)
        cpu = statistics.median(row[1] for row in rows)
        medians[way] = (wall, cpu)
        print(f"{way:8} {wall:16.2f} {cpu:15.2f} {rows[-1][2]:12d} {1000 * wall / args.queries:13.2f}")
    print(
        f"batched / alone: wall x{medians['batched'][0] / medians['alone'][0]:.3f}, "
        f"CPU x{medians['batched'][1] / medians['alone'][1]:.3f}; "
        f"lowest cosine between the two ways' vectors: {cosine:.6f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
