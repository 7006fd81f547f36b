"""all-MiniLM-L6-v2 on onnxruntime: the same vectors as sentence-transformers, without torch.

The pipeline of the reference model (``modules.json``): BERT with inputs truncated at 256 tokens, mean of
the token embeddings under the attention mask, L2 normalisation. The ONNX file outputs
``last_hidden_state``; pooling and normalisation are done here with numpy, as sentence-transformers
does them.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from opentier.components import Embedder
from opentier.machine import available_cores
from opentier_embedder_minilm.assets import (
    MODEL_SHA256,
    TOKENIZER_SHA256,
    default_model_path,
    read_verified,
    tokenizer_path,
)
from opentier_embedder_minilm.options import MiniLMOptions

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

#: sentence-transformers' ``max_seq_length`` for this model, [CLS] and [SEP] included.
MAX_INPUT_TOKENS = 256
DIMENSIONS = 384
#: Changes with the weights, the tokenizer, the pooling or the truncation: anything that moves a vector.
VERSION = f"{MODEL_SHA256[:12]}-{TOKENIZER_SHA256[:12]}-mean-l2-{MAX_INPUT_TOKENS}"

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
#: Token ids of texts counted but not embedded yet, kept for :meth:`MiniLMEmbedder.encode`.
COUNTED_CACHE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class _Tokenizers:
    #: Truncates at :data:`MAX_INPUT_TOKENS`, no padding (batches are padded here, to their longest).
    truncating: Tokenizer
    #: Neither truncates nor pads: counts what a text would be before truncation.
    counting: Tokenizer


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (384 dimensions), int8 ONNX weights, loaded once at first use."""

    name = "minilm"
    description = "all-MiniLM-L6-v2 (384 dims) on onnxruntime, offline, no torch."
    dimensions = DIMENSIONS
    max_input_tokens = MAX_INPUT_TOKENS
    #: Most texts per onnxruntime run; ``max_batch_tokens`` also caps a run (bench/embedder.py).
    batch_size = 32
    max_batch_tokens = 1024
    version = VERSION

    def __init__(self, options: MiniLMOptions | None = None) -> None:
        # Two locks, so that counting tokens never waits for the (slower) model load.
        self._load_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        # Data parallelism: ``parallel_runs`` batches in flight, each single-threaded by default. On
        # a small model this beats one run on every core (no barrier between the threads of each
        # operator, nothing to spin-wait for), and it degrades gracefully when other work shares the
        # cores. The semaphore keeps concurrent callers from oversubscribing them.
        self.parallel_runs = available_cores()
        self._runs = threading.BoundedSemaphore(self.parallel_runs)
        self._pool: ThreadPoolExecutor | None = None
        self._session: onnxruntime.InferenceSession | None = None
        self._tokenizers: _Tokenizers | None = None
        # The chunker counts every chunk's text just before the pipeline embeds it: keeping the ids
        # spares tokenizing it twice. Taken out when used; the oldest go first when it is full.
        self._counted: OrderedDict[str, list[int]] = OrderedDict()
        self._counted_lock = threading.Lock()
        self.intra_op_threads = 1
        self.model_path: Path | None = None
        self.configure(options or MiniLMOptions())

    def configure(self, options: MiniLMOptions) -> None:
        """Apply ``options``; a new thread count or model file takes effect at the next embedding."""
        with self._load_lock:
            if options.batch_size is not None:
                self.batch_size = options.batch_size
            if options.max_batch_tokens is not None:
                self.max_batch_tokens = options.max_batch_tokens
            runs = options.parallel_runs or self.parallel_runs
            if runs != self.parallel_runs:
                self.parallel_runs = runs
                self._runs = threading.BoundedSemaphore(runs)
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                    self._pool = None
            threads = options.intra_op_threads or self.intra_op_threads
            model_path = options.model_path or self.model_path
            if (threads, model_path) != (self.intra_op_threads, self.model_path):
                self.intra_op_threads, self.model_path = threads, model_path
                self._session = None

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the tokenizer and the model now (otherwise done at first use); blocking."""
        self._get_session()

    def _get_tokenizers(self) -> _Tokenizers:
        tokenizers = self._tokenizers
        if tokenizers is None:
            with self._tokenizer_lock:
                if self._tokenizers is None:
                    self._tokenizers = _load_tokenizers()
                tokenizers = self._tokenizers
        return tokenizers

    def _get_session(self) -> onnxruntime.InferenceSession:
        session = self._session
        if session is None:
            with self._load_lock:
                if self._session is None:
                    path = self.model_path or default_model_path()
                    self._session = _load_session(path, self.intra_op_threads)
                session = self._session
        return session

    # -- the Embedder contract -----------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for ``text`` without truncation, [CLS] and [SEP] included.

        So ``count_tokens(text) <= max_input_tokens`` means ``text`` is embedded whole, and a text
        over the limit is embedded as its first ``max_input_tokens - 2`` word pieces.
        """
        ids = self._get_tokenizers().counting.encode(text).ids
        if len(ids) <= MAX_INPUT_TOKENS:  # a text the chunker may embed next (never a whole long block)
            with self._counted_lock:
                self._counted[text] = ids
                if len(self._counted) > COUNTED_CACHE_SIZE:
                    self._counted.popitem(last=False)
        return len(ids)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of ``text``'s word pieces ([CLS] and [SEP] excluded)."""
        offsets: list[tuple[int, int]] = (
            self._get_tokenizers().counting.encode(text, add_special_tokens=False).offsets
        )
        return offsets

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order; the work (and the first load) runs in a thread."""
        if not texts:
            return []
        vectors = await asyncio.to_thread(self.encode, list(texts))
        result: list[list[float]] = vectors.tolist()
        return result

    # -- the blocking work ---------------------------------------------------------------------

    def encode(self, texts: Sequence[str], *, sort_by_length: bool = True) -> FloatArray:
        """Blocking: a ``(len(texts), 384)`` float32 array of unit vectors, in the order of ``texts``.

        Texts run in batches (see :meth:`_batches`), each padded to its longest text; sorting them by
        token count first (the default) keeps that padding small.
        """
        result = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return result
        session = self._get_session()
        encodings = self._token_ids(texts)
        lengths = np.fromiter((len(ids) for ids in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(encodings))

        def run(rows: IntArray) -> None:
            input_ids, attention_mask = _pad([encodings[i] for i in rows])
            feeds = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids),
            }
            with self._runs:
                (hidden,) = session.run(["last_hidden_state"], feeds)
            result[rows] = mean_pool_normalise(hidden, attention_mask)

        batches = list(self._batches(order, lengths))
        if len(batches) == 1 or self.parallel_runs == 1:
            for rows in batches:
                run(rows)
        else:
            # Rows of different batches never overlap, so the runs write ``result`` independently.
            for future in [self._get_pool().submit(run, rows) for rows in batches]:
                future.result()
        return result

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._load_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel_runs, thread_name_prefix="minilm-run")
            return self._pool

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids as the model takes them (truncated), from the counted ones when kept."""
        found: list[list[int] | None] = []
        with self._counted_lock:
            for text in texts:
                found.append(self._counted.pop(text, None))
        missing = [i for i, ids in enumerate(found) if ids is None]
        if missing:
            fresh = self._get_tokenizers().truncating.encode_batch([texts[i] for i in missing])
            for i, encoding in zip(missing, fresh, strict=True):
                found[i] = encoding.ids
        return [_truncated(ids) for ids in found if ids is not None]

    def _batches(self, order: IntArray, lengths: IntArray) -> Iterator[IntArray]:
        """Consecutive runs of ``order`` of at most ``batch_size`` texts and ``max_batch_tokens`` padded
        tokens (at least one text): long texts go in smaller batches, which is faster on CPU."""
        batch: list[int] = []
        width = 0
        for index in order.tolist():
            grown = max(width, int(lengths[index]))
            if batch and (len(batch) == self.batch_size or grown * (len(batch) + 1) > self.max_batch_tokens):
                yield np.array(batch, dtype=np.int64)
                batch, grown = [], int(lengths[index])
            batch.append(index)
            width = grown
        if batch:
            yield np.array(batch, dtype=np.int64)


def mean_pool_normalise(hidden: FloatArray, attention_mask: IntArray) -> FloatArray:
    """sentence-transformers' ``Pooling(mean)`` then ``Normalize``: masked mean, then unit L2 norm."""
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (hidden * mask).sum(axis=1)
    pooled = summed / np.maximum(mask.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    normalised: FloatArray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalised


def _truncated(ids: list[int]) -> list[int]:
    """What truncation at :data:`MAX_INPUT_TOKENS` keeps: the first pieces, and the final [SEP]."""
    if len(ids) <= MAX_INPUT_TOKENS:
        return ids
    return ids[: MAX_INPUT_TOKENS - 1] + ids[-1:]


def _pad(encodings: Sequence[Sequence[int]]) -> tuple[IntArray, IntArray]:
    """``input_ids`` and ``attention_mask`` of one batch, right-padded with [PAD] (id 0)."""
    width = max(len(ids) for ids in encodings)
    input_ids = np.zeros((len(encodings), width), dtype=np.int64)
    attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, ids in enumerate(encodings):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def _load_tokenizers() -> _Tokenizers:
    from tokenizers import Tokenizer

    text = read_verified(tokenizer_path(), TOKENIZER_SHA256, "tokenizer").decode("utf-8")
    truncating = Tokenizer.from_str(text)
    # tokenizer.json ships with fixed padding and truncation at 128: sentence-transformers overrides
    # both (pads per batch, truncates at max_seq_length), and so do we.
    truncating.no_padding()
    truncating.enable_truncation(max_length=MAX_INPUT_TOKENS)
    counting = Tokenizer.from_str(text)
    counting.no_padding()
    counting.no_truncation()
    return _Tokenizers(truncating=truncating, counting=counting)


def _load_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime

    model = read_verified(path, MODEL_SHA256, "model file")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
