"""Records read incrementally from JSON Lines and CSV: one line (or CSV row) at a time, never the file.

Each reader is a plain generator of :class:`Record` and :class:`Problem` items, advanced by the loader in
a worker thread. A malformed record becomes a :class:`Problem` with its line number and the reading goes
on; only a CSV header that cannot be used stops it.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from opentier.errors import DocumentLoadError


@dataclass(frozen=True, slots=True)
class Record:
    """One record's fields, and the line it starts on (1-based, counting every physical line)."""

    line: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    """A record that could not be read, and why."""

    line: int
    reason: str


Item = Record | Problem


def physical_lines(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """``(number, bytes)`` per line; ``None`` for a line over ``limit`` bytes, which is skipped unread."""
    number = 0
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if len(raw) > limit and not raw.endswith(b"\n"):
            while True:  # drop the rest of the line, a bounded piece at a time
                rest = stream.readline(2**20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
            continue
        yield number, raw


def jsonl_records(stream: BinaryIO, *, encoding: str, limit: int) -> Iterator[Item]:
    """One JSON object per line; blank lines are allowed and skipped."""
    for number, raw in physical_lines(stream, limit):
        if raw is None:
            yield Problem(number, f"longer than {limit} bytes")
            continue
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as err:
            yield Problem(number, f"bytes that are not {encoding} (column {err.start + 1})")
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            yield Problem(number, f"invalid JSON: {err.msg} (column {err.colno})")
            continue
        except RecursionError:
            yield Problem(number, "invalid JSON: nested too deeply")
            continue
        if not isinstance(value, dict):
            yield Problem(number, f"a JSON {_json_type(value)}, not an object")
            continue
        yield Record(number, value)


def csv_records(stream: BinaryIO, *, uri: str, delimiter: str, encoding: str, limit: int) -> Iterator[Item]:
    """One record per CSV row, keyed by the header row; a row may span lines (quoted newlines).

    A row with fewer values than the header lacks the last fields (common in real files); one with more
    values, bad bytes, an over-long line or broken quoting is a :class:`Problem`.
    """
    bad_lines: dict[int, str] = {}

    def text_lines() -> Iterator[str]:
        for number, raw in physical_lines(stream, limit):
            if raw is None:
                bad_lines[number] = f"line {number} is longer than {limit} bytes"
                yield "\n"
                continue
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as err:
                bad_lines[number] = f"bytes that are not {encoding} (line {number}, column {err.start + 1})"
                yield raw.decode(encoding, errors="replace")

    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)  # process-wide, and only ever raised: the default (128 KiB) is too small
    reader = csv.reader(text_lines(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            end = reader.line_num
            for number in range(start, end + 1):
                bad_lines.pop(number, None)
            if header is None:
                raise DocumentLoadError(
                    f"{uri}: the CSV header (line {start}) cannot be read: {err}"
                ) from err
            yield Problem(start, f"malformed CSV: {err}")
            continue
        end = reader.line_num
        problems = [bad_lines.pop(n) for n in range(start, end + 1) if n in bad_lines]
        if header is None:
            if problems:
                raise DocumentLoadError(f"{uri}: the CSV header cannot be read: {problems[0]}")
            if any(cell.strip() for cell in row):
                header = _header(row, uri)
            continue
        if problems:
            yield Problem(start, problems[0])
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            yield Problem(start, f"{len(row)} values but the header has {len(header)} columns")
            continue
        yield Record(start, dict(zip(header, row, strict=False)))


def _header(row: list[str], uri: str) -> list[str]:
    names = [cell.strip() or f"column_{index}" for index, cell in enumerate(row, start=1)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DocumentLoadError(f"{uri}: the CSV header names a column twice: {', '.join(duplicates)}")
    return names


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
