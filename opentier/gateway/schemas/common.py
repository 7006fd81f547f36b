"""Shapes shared by several resources: pagination, errors a resource carries, time and metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from pydantic import BaseModel, Field

from opentier.generated.intelligence.v1 import common_pb2

#: Most items one page may hold (the host clamps to the same).
MAX_PAGE_SIZE = 500


class PageQuery(BaseModel):
    """Pagination of a list: pass ``next_page_token`` of a response back as ``page_token``."""

    page_size: int | None = Field(
        default=None, ge=1, le=MAX_PAGE_SIZE, description="Most items to return (default 50)."
    )
    page_token: str | None = Field(
        default=None, max_length=1024, description="`next_page_token` of the previous page."
    )

    def to_pb(self) -> common_pb2.PageRequest:
        return common_pb2.PageRequest(page_size=self.page_size or 0, page_token=self.page_token or "")


class Problem(BaseModel):
    """Why something failed or was dropped (a stable code and a message)."""

    code: str
    message: str

    @classmethod
    def from_pb(cls, info: common_pb2.ErrorInfo) -> Problem:
        return cls(code=info.code, message=info.message)


class Span(BaseModel):
    """Characters ``[char_start, char_end)`` of the document's cleaned text (Unicode code points)."""

    char_start: int
    char_end: int

    @classmethod
    def from_pb(cls, span: common_pb2.TextSpan) -> Span:
        return cls(char_start=span.char_start, char_end=span.char_end)


def next_token(page: common_pb2.PageResponse) -> str | None:
    """The token of the next page, ``None`` on the last page."""
    return page.next_page_token or None


def time_of(message: Message, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, ``None`` when unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def problem_of(message: Message, field: str = "error") -> Problem | None:
    if not message.HasField(field):
        return None
    info: common_pb2.ErrorInfo = getattr(message, field)
    return Problem.from_pb(info) if info.code or info.message else None


def dict_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(struct)
    return data


def struct_of(data: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if data:
        json_format.ParseDict(data, struct)
    return struct
