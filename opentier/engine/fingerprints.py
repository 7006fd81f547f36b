"""Content fingerprints: exact hashes (is anything new?) and SimHash (is it nearly a copy?)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_TOKEN = re.compile(r"\w+", re.UNICODE)
_MASK = (1 << 64) - 1


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
    counts = [0] * 64
    grams = (" ".join(words[i : i + shingle]) for i in range(max(1, len(words) - shingle + 1)))
    for gram in grams:
        value = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "big")
        for bit in range(64):
            counts[bit] += 1 if value >> bit & 1 else -1
    unsigned = sum(1 << bit for bit in range(64) if counts[bit] > 0) & _MASK
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned
