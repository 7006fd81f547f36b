"""Content fingerprints: exact hashes (is anything new?) and SimHash (is it nearly a copy?)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)


def digest(*parts: bytes | str) -> str:
    """SHA-256 over the parts, each length-prefixed so that boundaries matter."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def content_hash(pipeline: str, title: str | None, text: str, metadata: dict[str, Any]) -> str:
    """What a document's stored version is compared with: its cleaned content and how it was made."""
    return digest(pipeline, title or "", text, json.dumps(metadata, sort_keys=True, default=str))


def simhash(text: str, shingle: int = 3) -> int:
    """64-bit SimHash of word shingles, as a signed integer (PostgreSQL ``bigint``)."""
    words = _TOKEN.findall(text.lower())
    if not words:
        return 0
    grams = [" ".join(words[i : i + shingle]) for i in range(max(1, len(words) - shingle + 1))]
    hashes = np.frombuffer(
        b"".join(hashlib.blake2b(gram.encode(), digest_size=8).digest() for gram in grams), dtype=">u8"
    )
    # One row of 64 bits per shingle (most significant first); a bit is set where most shingles set it.
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1)
    majority = bits.sum(axis=0, dtype=np.int64) * 2 > len(grams)
    unsigned = int.from_bytes(np.packbits(majority).tobytes(), "big")
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned
