"""Keyset pagination for the identity lists: an opaque token encodes the last row's sort key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentier.errors import InvalidRequestError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    #: Pass back to get the next page; empty when this page is the last.
    next_token: str


def encode_token(*key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_token(token: str, parts: int) -> list[str]:
    """The key inside ``token``; invalid_request for anything this server did not issue."""
    try:
        key = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("page_token: not a token this server issued") from None
    if not isinstance(key, list) or len(key) != parts or not all(isinstance(k, str) for k in key):
        raise InvalidRequestError("page_token: not a token this server issued")
    return key
