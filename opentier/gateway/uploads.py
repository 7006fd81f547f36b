"""Reads a ``multipart/form-data`` upload as it arrives, stopping at the size limit.

The body is decoded part by part while it streams in (werkzeug's sans-IO decoder), so an upload over the
limit is refused as soon as the limit is passed, not after the whole body was received, and nothing is
spooled to disk. What stays in memory is the file itself, at most ``limit`` bytes: the host takes an
upload in one gRPC message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Event, Field, File, MultipartDecoder, NeedData

from opentier.errors import InvalidRequestError, UploadTooLargeError

FILE_FIELD = "file"
#: The form fields an upload may carry besides the file, each at most :data:`FIELD_LIMIT` bytes.
FIELDS = frozenset({"metadata", "force", "loader"})
FIELD_LIMIT = 64 * 1024
#: Bytes a multipart body may hold beyond its file: boundaries, part headers and the small fields.
ENVELOPE_LIMIT = len(FIELDS) * FIELD_LIMIT + 16 * 1024


@dataclass
class Upload:
    filename: str
    media_type: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any] | None:
        """The ``metadata`` field: a JSON object, or None when absent."""
        raw = self.fields.get("metadata", "").strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InvalidRequestError(f"the metadata field is not valid JSON: {err.msg}") from None
        if not isinstance(value, dict):
            raise InvalidRequestError("the metadata field must be a JSON object")
        return value

    def flag(self, name: str) -> bool:
        raw = self.fields.get(name, "").strip().lower()
        if raw in {"", "false", "0", "no", "off"}:
            return False
        if raw in {"true", "1", "yes", "on"}:
            return True
        raise InvalidRequestError(f"the {name} field must be true or false, not {raw!r}")


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a ``Content-Type``; invalid_request when it is not multipart."""
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary:
        raise InvalidRequestError(
            "send the document as multipart/form-data with the file in a part named `file`"
        )
    return boundary.encode("latin-1")


def too_large(limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"the upload is larger than this gateway accepts ({limit} bytes, gateway.max_upload_bytes)"
    )


class _FormReader:
    """Turns decoder events into the upload, refusing unknown, repeated and oversized parts as they
    start or grow (which also bounds the number of parts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.upload: Upload | None = None
        self.fields: dict[str, str] = {}
        self.finished = False
        self._current: Field | File | None = None
        self._buffer = bytearray()

    def handle(self, event: Event) -> None:
        if isinstance(event, File):
            if event.name != FILE_FIELD or self.upload is not None:
                raise InvalidRequestError(f"send exactly one file, in a part named `{FILE_FIELD}`")
            self._begin(event)
        elif isinstance(event, Field):
            if event.name not in FIELDS or event.name in self.fields:
                allowed = ", ".join(sorted(FIELDS))
                raise InvalidRequestError(
                    f"unexpected form field {event.name!r}; allowed: {FILE_FIELD}, {allowed}"
                )
            self._begin(event)
        elif isinstance(event, Data):
            self._data(event)
        elif isinstance(event, Epilogue):
            self.finished = True

    def _begin(self, part: Field | File) -> None:
        self._current = part
        self._buffer.clear()

    def _data(self, event: Data) -> None:
        current = self._current
        if current is None:
            raise InvalidRequestError("malformed multipart body")
        self._buffer.extend(event.data)
        if isinstance(current, File) and len(self._buffer) > self.limit:
            raise too_large(self.limit)
        if not isinstance(current, File) and len(self._buffer) > FIELD_LIMIT:
            raise InvalidRequestError(f"the form field {current.name!r} is longer than {FIELD_LIMIT} bytes")
        if event.more_data:
            return
        if isinstance(current, File):
            media_type = current.headers.get("content-type", "")
            self.upload = Upload(current.filename or "", media_type, bytes(self._buffer))
        else:
            self.fields[current.name] = self._buffer.decode("utf-8", errors="replace")
        self._buffer.clear()
        self._current = None

    def drain(self, decoder: MultipartDecoder) -> None:
        """Handle every event the decoder can produce from what it has received."""
        while not self.finished:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                return
            self.handle(event)


async def read_upload(body: AsyncIterable[bytes], content_type: str | None, limit: int) -> Upload:
    """The upload's file and fields; :class:`UploadTooLargeError` the moment the file passes ``limit``."""
    boundary = boundary_of(content_type)
    # werkzeug's decoder (3.1) lets the delimiter's CR slip into the data when its buffer ends right
    # after `--boundary-` (the closing delimiter cut before its last dash): hold that dash back.
    cut_closing = b"--" + boundary + b"-"
    decoder = MultipartDecoder(boundary)
    reader = _FormReader(limit)
    held = recent = b""  # the dash held back; the last bytes the decoder received
    try:
        async for received in body:
            chunk = held + received if held else received
            held = b""
            if (recent + chunk[-len(cut_closing) :]).endswith(cut_closing):
                chunk, held = chunk[:-1], chunk[-1:]
            decoder.receive_data(chunk)
            recent = (recent + chunk[-len(cut_closing) :])[-len(cut_closing) :]
            reader.drain(decoder)
            if reader.finished:
                break
        else:
            decoder.receive_data(held or None)
            if held:
                decoder.receive_data(None)
            reader.drain(decoder)
    except ValueError as err:  # the decoder's own complaints about the body
        raise InvalidRequestError(f"malformed multipart body: {err}") from None
    upload = reader.upload
    if upload is None:
        raise InvalidRequestError(f"the upload has no complete file: send it in a part named `{FILE_FIELD}`")
    if not upload.filename.strip():
        raise InvalidRequestError("the file part has no filename; it becomes the document's source")
    upload.fields = reader.fields
    return upload
