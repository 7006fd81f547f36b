"""An upload's ``multipart/form-data`` body, streamed from the file in chunks with progress reports.

The body is produced piece by piece, so a large file is never held in memory, and its length is known
in advance (``Content-Length``), so the gateway can refuse an upload over its limit before reading it.
The progress callback gets ``(bytes_sent, total_bytes)`` of the file each time the HTTP client took a
chunk: non-decreasing, ending at the file's size.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

#: ``(bytes_sent, total_bytes)`` of the file being uploaded.
ProgressCallback = Callable[[int, int], None]
DEFAULT_CHUNK_BYTES = 64 * 1024


def _quoted(value: str) -> str:
    """A form-data parameter value, escaped as browsers do (HTML's multipart/form-data encoding)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Progress:
    """Reports progress that never goes back, even when a request is sent again (after a 401)."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.reported = -1

    def report(self, sent: int) -> None:
        if self.callback is not None and sent > self.reported:
            self.reported = sent
            self.callback(sent, self.total)


@dataclass(frozen=True)
class UploadBody:
    """The body of one upload: the form fields, then the file read from ``path`` or ``data``."""

    filename: str
    size: int
    media_type: str
    fields: dict[str, str]
    path: Path | None = None
    data: bytes | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    boundary: str = ""

    @classmethod
    def of(
        cls,
        source: str | os.PathLike[str] | bytes,
        *,
        filename: str | None = None,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        loader: str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> UploadBody:
        """The upload of a file (a path) or of bytes (then ``filename`` is needed: it is the source)."""
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be at least 1")
        fields: dict[str, str] = {}
        if metadata is not None:
            fields["metadata"] = json.dumps(metadata, ensure_ascii=False)
        if force:
            fields["force"] = "true"
        if loader:
            fields["loader"] = loader
        if isinstance(source, bytes):
            if not filename:
                raise ValueError("uploading bytes needs a filename: it becomes the document's source")
            path, data, size = None, source, len(source)
        else:
            path, data = Path(source), None
            size = path.stat().st_size
            filename = filename or path.name
        guessed = mimetypes.guess_type(filename)[0]
        return cls(
            filename=filename,
            size=size,
            media_type=media_type or guessed or "application/octet-stream",
            fields=fields,
            path=path,
            data=data,
            chunk_bytes=chunk_bytes,
            boundary="opentier-" + secrets.token_hex(16),
        )

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self) -> bytes:
        parts = []
        for name, value in self.fields.items():
            parts.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            )
        parts.append(
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{_quoted(self.filename)}"\r\n'
            f"Content-Type: {self.media_type}\r\n\r\n"
        )
        return "".join(parts).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def length(self) -> int:
        return len(self._head()) + self.size + len(self._tail())

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Content-Length": str(self.length)}

    def _open(self) -> BinaryIO:
        assert self.path is not None
        return self.path.open("rb")

    def chunks(self, progress: Progress) -> Iterator[bytes]:
        """The body, for a synchronous HTTP client."""
        yield self._head()
        sent = 0
        if self.data is not None:
            for start in range(0, len(self.data), self.chunk_bytes):
                piece = self.data[start : start + self.chunk_bytes]
                yield piece
                sent += len(piece)
                progress.report(sent)
        else:
            with self._open() as file:
                while piece := file.read(self.chunk_bytes):
                    yield piece
                    sent += len(piece)
                    progress.report(sent)
        self._check(sent)
        progress.report(sent)
        yield self._tail()

    async def achunks(self, progress: Progress) -> AsyncIterator[bytes]:
        """The body, for an async HTTP client (the file is read off the event loop)."""
        yield self._head()
        sent = 0
        if self.data is not None:
            for start in range(0, len(self.data), self.chunk_bytes):
                piece = self.data[start : start + self.chunk_bytes]
                yield piece
                sent += len(piece)
                progress.report(sent)
        else:
            file = await asyncio.to_thread(self._open)
            try:
                while piece := await asyncio.to_thread(file.read, self.chunk_bytes):
                    yield piece
                    sent += len(piece)
                    progress.report(sent)
            finally:
                await asyncio.to_thread(file.close)
        self._check(sent)
        progress.report(sent)
        yield self._tail()

    def _check(self, sent: int) -> None:
        if sent != self.size:
            raise OSError(f"{self.path} changed while it was uploaded ({self.size} bytes, then {sent})")
