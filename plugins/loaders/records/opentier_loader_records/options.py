"""The records loader's options: plugin-wide defaults, overridden per source by ``Source.options``."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class RecordOptions(BaseModel):
    """How records become documents. Unknown keys are refused, so a misspelled option never passes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["jsonl", "csv", "tsv"] | None = Field(
        default=None,
        description="Force the format; by default it follows the media type, then the extension.",
    )
    text_field: str | list[str] = Field(
        default="text",
        description="Field holding the text, or a list of fields whose values become successive paragraphs.",
    )
    title_field: str | None = Field(default="title", description="Field holding the title, when present.")
    id_field: str | None = Field(
        default=None,
        description="Field identifying the record: the document's source becomes <uri>#<id> "
        "(default: <uri>#L<line>, the record's first line).",
    )
    metadata_fields: list[str] | None = Field(
        default=None,
        description="Fields copied into the metadata; None copies every field that is not the text, "
        "title or id.",
    )
    delimiter: str | None = Field(
        default=None, min_length=1, max_length=1, description="CSV delimiter (default ',' or tab for TSV)."
    )
    encoding: str = Field(default="utf-8", description="Text encoding; it must be ASCII-compatible.")
    on_error: Literal["report", "skip", "fail"] = Field(
        default="report",
        description="A malformed record: 'report' skips it and raises one DocumentLoadError listing every "
        "bad record after the good ones were yielded; 'skip' skips it with a logged warning; 'fail' raises "
        "at the first one.",
    )
    max_errors: int = Field(
        default=100,
        ge=0,
        description="Stop reading after this many malformed records (the file is likely not of this "
        "format); 0 means no limit.",
    )
    max_record_bytes: int = Field(
        default=16 * 2**20, ge=1024, description="Longest record accepted, in bytes (memory stays bounded)."
    )

    @field_validator("text_field")
    @classmethod
    def _some_text_field(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("name at least one field")
        return value

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, value: str) -> str:
        try:
            name = codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if name.startswith(("utf-16", "utf-32")) or "\n".encode(name) != b"\n":
            raise ValueError(f"{value!r} is not ASCII-compatible; convert the file to UTF-8")
        return name

    @property
    def text_fields(self) -> list[str]:
        return [self.text_field] if isinstance(self.text_field, str) else list(self.text_field)

    @classmethod
    def merged(cls, defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> RecordOptions:
        """Options from the plugin defaults and a source's own options (which win)."""
        return cls.model_validate({**defaults, **overrides})


def describe_error(err: ValidationError) -> str:
    """``text_field: name at least one field; delimiter: ...`` — short enough for one status line."""
    parts = []
    for error in err.errors():
        where = ".".join(str(part) for part in error["loc"]) or "options"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
