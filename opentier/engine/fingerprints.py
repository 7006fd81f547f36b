"""Content fingerprints: exact hashes (is anything new?) and SimHash (is it nearly a copy?)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import numpy.typing as npt

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
    """64-bit SimHash of word shingles, as a signed integer (PostgreSQL ``bigint``).

    Each distinct word is hashed once (BLAKE2b); a shingle's hash mixes its words' hashes with odd
    multipliers and the SplitMix64 finaliser, in numpy: hashing every shingle's text instead cost
    most of the time of a document's fingerprint.
    """
    words = _TOKEN.findall(text.lower())
    if not words:
        return 0
    ids: dict[str, int] = {}
    positions = np.fromiter((ids.setdefault(word, len(ids)) for word in words), dtype=np.int64)
    vocabulary = np.frombuffer(
        b"".join(hashlib.blake2b(word.encode(), digest_size=8).digest() for word in ids), dtype=">u8"
    ).astype(np.uint64)
    hashed = vocabulary[positions]
    count = max(1, len(words) - shingle + 1)
    grams = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(min(shingle, len(words))):
            grams = grams * _MULTIPLIER + hashed[offset : offset + count]
        grams = _mix(grams)
    # One row of 64 bits per shingle (most significant first); a bit is set where most shingles set it.
    bits = np.unpackbits(grams.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    majority = bits.sum(axis=0, dtype=np.int64) * 2 > count
    unsigned = int.from_bytes(np.packbits(majority).tobytes(), "big")
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: every input bit affects every output bit (wrapping uint64 arithmetic)."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))
