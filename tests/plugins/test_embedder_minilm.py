"""The offline default embedder ``minilm``, loaded through its real entry point (no torch needed).

Reference vectors: ``tests/fixtures/minilm_reference.json``, made by sentence-transformers with the
official all-MiniLM-L6-v2 (``plugins/models/minilm/scripts/make_reference.py``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import opentier_embedder_minilm.embedder as embedder_module
import pytest
from opentier_embedder_minilm import MiniLMEmbedder, MiniLMOptions
from opentier_embedder_minilm.assets import MODEL_SHA256, TOKENIZER_SHA256, default_model_path

from opentier.components import Embedder
from opentier.config import PluginSettings, Settings
from opentier.errors import ConfigError, PluginError
from opentier.plugin_manager import PluginSelection, PluginSystem, load_plugins

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "minilm_reference.json"
REFERENCE: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
TEXTS: list[str] = [item["text"] for item in REFERENCE["items"]]
VECTORS = np.array([item["vector"] for item in REFERENCE["items"]], dtype=np.float32)
MIN_COSINE = 0.99
#: Words that are one word piece each, so the token count of a text of them is easy to predict.
ONE_TOKEN_WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home"]


def start(system: PluginSystem, options: dict[str, Any] | None = None) -> None:
    """What a host does after loading its plugins: run the start-up hooks."""
    settings = Settings(plugins=PluginSettings(options={"minilm": options} if options is not None else {}))
    system.pm.hook.opentier_startup(settings=settings)


@pytest.fixture(scope="module")
def system() -> PluginSystem:
    system = load_plugins(selection=PluginSelection(allow=["minilm"]))
    assert not system.failures, system.failures
    start(system)
    return system


@pytest.fixture(scope="module")
def embedder(system: PluginSystem) -> Embedder:
    return system.registry.get_typed(Embedder, "minilm")


def cosines(vectors: Sequence[Sequence[float]], reference: np.ndarray) -> np.ndarray:
    ours = np.asarray(vectors, dtype=np.float64)
    ref = reference.astype(np.float64)
    result: np.ndarray = (ours * ref).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    return result


def alone(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Each text embedded in a batch of its own: what any batching must reproduce."""
    assert isinstance(embedder, MiniLMEmbedder)
    return np.concatenate([embedder.encode([text]) for text in texts])


def test_identity(system: PluginSystem, embedder: Embedder) -> None:
    assert isinstance(embedder, MiniLMEmbedder)
    assert (embedder.name, embedder.dimensions, embedder.max_input_tokens) == ("minilm", 384, 256)
    assert embedder.version == f"{MODEL_SHA256[:12]}-{TOKENIZER_SHA256[:12]}-mean-l2-256"
    assert 1 <= embedder.batch_size <= 256
    assert system.components_of("minilm") == [("embedder", "minilm")]
    [info] = system.loaded
    assert (info.name, info.distribution, info.module) == (
        "minilm",
        "opentier-embedder-minilm",
        "opentier_embedder_minilm",
    )
    assert REFERENCE["tokenizer_sha256"] == TOKENIZER_SHA256
    assert REFERENCE["max_seq_length"] == embedder.max_input_tokens


async def test_vectors_match_the_reference_model(embedder: Embedder) -> None:
    vectors = await embedder.embed(TEXTS)
    assert len(vectors) == len(TEXTS) and all(len(vector) == 384 for vector in vectors)
    found = cosines(vectors, VECTORS)
    worst = int(np.argmin(found))
    print(
        f"minilm vs sentence-transformers: min cosine {found.min():.5f} ({TEXTS[worst]!r}), "
        f"mean {found.mean():.5f}, over {len(TEXTS)} texts"
    )
    assert found.min() >= MIN_COSINE, f"cosine {found[worst]:.5f} for {TEXTS[worst]!r}"
    assert any(item["tokens"] > embedder.max_input_tokens for item in REFERENCE["items"])


async def test_vectors_have_unit_norm(embedder: Embedder) -> None:
    norms = np.linalg.norm(np.asarray(await embedder.embed(TEXTS)), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_count_tokens_matches_the_reference_tokenizer(embedder: Embedder) -> None:
    assert [embedder.count_tokens(text) for text in TEXTS] == [item["tokens"] for item in REFERENCE["items"]]
    assert embedder.count_tokens("") == 2  # [CLS] and [SEP]


def test_token_spans_are_the_counted_word_pieces(embedder: Embedder) -> None:
    text = "The boundary-layer transition at Mach 2.5 (supersonic) was measured."
    spans = embedder.token_spans(text)
    assert spans is not None
    assert len(spans) + 2 == embedder.count_tokens(text)
    assert all(0 <= start < end <= len(text) for start, end in spans)
    assert text[spans[1][0] : spans[1][1]].lower() == "boundary"


async def test_counted_texts_embed_exactly_as_uncounted_ones(embedder: Embedder) -> None:
    # The pipeline counts each chunk then embeds it; the counted ids are reused, with the model's
    # truncation applied to texts over its 256 tokens.
    texts = [*TEXTS[:5], "lift " * 400]
    fresh = np.asarray(await embedder.embed(texts))
    for text in texts:
        embedder.count_tokens(text)
    reused = np.asarray(await embedder.embed(texts))
    np.testing.assert_array_equal(reused, fresh)


def test_parallel_runs_give_the_vectors_of_one_run_at_a_time() -> None:
    texts = [TEXTS[i % len(TEXTS)] + f" variant {i}" for i in range(100)]
    serial = MiniLMEmbedder(MiniLMOptions(parallel_runs=1))
    parallel = MiniLMEmbedder(MiniLMOptions(parallel_runs=3, batch_size=4))
    np.testing.assert_allclose(parallel.encode(texts), serial.encode(texts), atol=1e-6)


async def test_order_is_kept_with_mixed_lengths(embedder: Embedder) -> None:
    rng = np.random.default_rng(7)
    texts = [TEXTS[i] for i in rng.permutation(len(TEXTS))] + [TEXTS[-1], "x " * 200, TEXTS[0]]
    vectors = np.asarray(await embedder.embed(texts))
    np.testing.assert_allclose(vectors, alone(embedder, texts), atol=1e-5)


class RecordingSession:
    """Wraps the onnxruntime session to record the shape of every batch it runs."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.shapes: list[tuple[int, int]] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
        self.shapes.append(feeds["input_ids"].shape)
        return self.session.run(names, feeds)


@pytest.fixture
def recording(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> RecordingSession:
    assert isinstance(embedder, MiniLMEmbedder)
    session = RecordingSession(embedder._get_session())
    monkeypatch.setattr(embedder, "_session", session)
    return session


@pytest.mark.parametrize("offset", [-1, 0, 1, 33])
async def test_batch_boundaries(embedder: Embedder, recording: RecordingSession, offset: int) -> None:
    size = embedder.batch_size
    count = size + offset
    short = [item["text"] for item in REFERENCE["items"] if item["tokens"] <= 20]
    texts = [f"{short[i % len(short)]} {i}" for i in range(count)]
    vectors = await embedder.embed(texts)
    assert len(vectors) == count
    # Batches run in parallel: compare the sizes, whatever order they ran in.
    assert sorted(rows for rows, _width in recording.shapes) == sorted(
        [size] * (count // size) + ([count % size] if count % size else [])
    )
    np.testing.assert_allclose(np.asarray(vectors), alone(embedder, texts), atol=1e-5)


async def test_long_texts_run_in_smaller_batches(embedder: Embedder, recording: RecordingSession) -> None:
    assert isinstance(embedder, MiniLMEmbedder)
    texts = [" ".join(ONE_TOKEN_WORDS * 40)] * 6 + ["short"] * 3
    await embedder.embed(texts)
    per_batch = embedder.max_batch_tokens // embedder.max_input_tokens
    assert (per_batch, embedder.max_input_tokens) in recording.shapes
    assert all(rows * width <= embedder.max_batch_tokens for rows, width in recording.shapes)
    assert sum(rows for rows, _width in recording.shapes) == len(texts)
    assert min(width for _rows, width in recording.shapes) == 3  # the short texts, padded to their own length


async def test_empty_input(embedder: Embedder) -> None:
    assert await embedder.embed([]) == []


async def test_a_text_over_the_limit_is_embedded_as_its_truncation(embedder: Embedder) -> None:
    limit = embedder.max_input_tokens
    words = [ONE_TOKEN_WORDS[i % len(ONE_TOKEN_WORDS)] for i in range(400)]
    long_text = " ".join(words)
    kept = " ".join(words[: limit - 2])
    assert embedder.count_tokens(long_text) == 402
    assert embedder.count_tokens(kept) == limit
    assert embedder.count_tokens(" ".join(words[: limit - 1])) == limit + 1
    long_vector, kept_vector, shorter_vector = await embedder.embed(
        [long_text, kept, " ".join(words[: limit - 3])]
    )
    np.testing.assert_allclose(long_vector, kept_vector, atol=1e-6)
    assert not np.allclose(long_vector, shorter_vector, atol=1e-6)


async def test_concurrent_calls_get_their_own_vectors(embedder: Embedder) -> None:
    groups = [TEXTS[i::4] for i in range(4)]
    results = await asyncio.gather(*(embedder.embed(group) for group in groups))
    for group, vectors in zip(groups, results, strict=True):
        np.testing.assert_allclose(np.asarray(vectors), alone(embedder, group), atol=1e-5)


async def test_loading_and_embedding_do_not_block_the_event_loop() -> None:
    fresh = MiniLMEmbedder()  # not loaded yet: the first call loads the model, in the thread too
    texts = [" ".join(ONE_TOKEN_WORDS * 30)] * (2 * fresh.batch_size)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    began = time.perf_counter()
    vectors = await fresh.embed(texts)
    elapsed = time.perf_counter() - began
    task.cancel()
    assert len(vectors) == len(texts)
    gaps = np.diff([began, *[tick for tick in ticks if tick >= began], time.perf_counter()])
    print(
        f"embedding {len(texts)} texts of 256 tokens took {elapsed:.2f}s; ticks {len(gaps)}, "
        f"longest event-loop gap {gaps.max() * 1000:.0f} ms"
    )
    assert elapsed > 0.2, "the workload is too small to show anything"
    assert gaps.max() < 0.15


def test_the_model_is_loaded_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = embedder_module._load_session

    def counting(path: Path, threads: int) -> Any:
        calls.append(path)
        time.sleep(0.05)  # widen the window in which a second loader could slip in
        return real(path, threads)

    monkeypatch.setattr(embedder_module, "_load_session", counting)
    fresh = MiniLMEmbedder()
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def first_use() -> None:
        barrier.wait()
        try:
            fresh.encode(["hello"])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and calls == [default_model_path()]


async def test_a_model_file_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(default_model_path().read_bytes()[:-1] + b"\0")
    fresh = MiniLMEmbedder(MiniLMOptions(model_path=wrong))
    assert fresh.count_tokens("counting needs no model") == 6
    with pytest.raises(
        PluginError,
        match=r"model file .*model\.onnx has sha256 [0-9a-f]{64}, expected "
        f"{MODEL_SHA256}.*reinstall",
    ):
        await fresh.embed(["anything"])


async def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    fresh = MiniLMEmbedder(MiniLMOptions(model_path=tmp_path / "absent.onnx"))
    with pytest.raises(PluginError, match=r"cannot read its model file .*absent\.onnx"):
        await fresh.embed(["anything"])


def test_startup_options_configure_the_embedder(tmp_path: Path) -> None:
    system = load_plugins(selection=PluginSelection(allow=["minilm"]))
    embedder = system.registry.get_typed(Embedder, "minilm")
    assert isinstance(embedder, MiniLMEmbedder)
    start(system, {"batch_size": 5, "intra_op_threads": 1, "preload": True})
    assert (embedder.batch_size, embedder.intra_op_threads) == (5, 1)
    assert embedder._session is not None and embedder._session.get_session_options().intra_op_num_threads == 1


def test_startup_with_a_wrong_model_file_fails_when_preloading(tmp_path: Path) -> None:
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(b"not a model")
    system = load_plugins(selection=PluginSelection(allow=["minilm"]))
    with pytest.raises(PluginError, match="sha256"):
        start(system, {"model_path": str(wrong), "preload": True})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch": 8}, "unknown option.*batch; known: parallel_runs, intra_op_threads, batch_size"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"intra_op_threads": "2"}, "intra_op_threads must be a whole number"),
        ({"preload": "yes"}, "preload must be true or false"),
    ],
)
def test_wrong_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    system = load_plugins(selection=PluginSelection(allow=["minilm"]))
    with pytest.raises(ConfigError, match=message):
        start(system, options)
