"""A record's fields → a :class:`~opentier.components.Document` (text, title, id, metadata)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentier.components import Document
from opentier_loader_records.options import RecordOptions
from opentier_loader_records.readers import Problem, Record

_MISSING = object()


def to_document(
    record: Record,
    options: RecordOptions,
    *,
    uri: str,
    media_type: str,
    source_metadata: Mapping[str, Any],
) -> Document | Problem:
    """The record's document, or the :class:`Problem` that keeps it from being one."""
    fields = record.fields
    texts: list[str] = []
    found = False
    for name in options.text_fields:
        value = lookup(fields, name)
        if value is _MISSING:
            continue
        found = True
        text = as_text(value).strip()
        if text:
            texts.append(text)
    if not found:
        wanted = " or ".join(repr(name) for name in options.text_fields)
        present = ", ".join(list(fields)[:12]) or "none"
        return Problem(record.line, f"no field {wanted} (fields: {present})")

    source = f"{uri}#L{record.line}"
    if options.id_field is not None:
        identifier = lookup(fields, options.id_field)
        if identifier is _MISSING or identifier is None or identifier == "" or isinstance(identifier, bool):
            return Problem(record.line, f"no id in field {options.id_field!r}")
        if not isinstance(identifier, str | int | float):
            return Problem(record.line, f"the id in field {options.id_field!r} is not a string or number")
        source = f"{uri}#{identifier}"

    title: str | None = None
    if options.title_field is not None:
        value = lookup(fields, options.title_field)
        if value is not _MISSING and value is not None:
            title = " ".join(as_text(value).split()) or None

    used = {*options.text_fields, options.title_field, options.id_field}
    metadata: dict[str, Any] = {}
    if options.metadata_fields is None:
        metadata = {key: value for key, value in fields.items() if key not in used and value != ""}
    else:
        for name in options.metadata_fields:
            value = lookup(fields, name)
            if value is not _MISSING and value != "":
                metadata[name] = value
    return Document.from_text(
        "\n\n".join(texts),
        source=source,
        title=title,
        media_type=media_type,
        metadata={**source_metadata, **metadata, "line": record.line},
    )


def lookup(fields: Mapping[str, Any], name: str) -> Any:
    """``fields[name]``, else a dotted path into nested objects (``author.name``), else missing."""
    if name in fields:
        return fields[name]
    value: Any = fields
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n\n".join(value)
    return json.dumps(value, ensure_ascii=False)
