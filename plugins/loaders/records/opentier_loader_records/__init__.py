"""Records loader: JSON Lines and CSV/TSV, one document per record, streamed.

The file is read a line at a time in a worker thread, a small batch per hop, and documents are yielded as
they are read: memory stays bounded whatever the file's size. Options come from
``[plugins.options.records]`` (read at start-up through ``opentier_startup``), overridden per source by
``Source.options``; see this distribution's README.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import ValidationError

from opentier import hookimpl
from opentier.components import Document, Loader, Source
from opentier.errors import ConfigError, DocumentLoadError
from opentier_loader_records.documents import to_document
from opentier_loader_records.options import RecordOptions, describe_error
from opentier_loader_records.readers import Problem, Record, csv_records, jsonl_records

if TYPE_CHECKING:
    from opentier.config import Settings

#: The entry-point name, which keys this plugin's section in the settings.
PLUGIN_NAME = "records"
#: Documents made per hop to the worker thread: few enough to bound memory, enough to amortise the hop.
#: The first hop makes one, then each twice as many up to the cap: the first document comes out at
#: once, even from a pipe whose writer is slow.
BATCH_RECORDS = 64
BATCH_BYTES = 2**20
#: Bad records quoted in the error message (all are counted).
QUOTED_PROBLEMS = 5

_FORMATS_BY_MEDIA_TYPE = {
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/jsonlines": "jsonl",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
}
_FORMATS_BY_EXTENSION = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}
_MEDIA_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv", "tsv": "text/tab-separated-values"}

log = logging.getLogger(__name__)


class RecordsLoader(Loader):
    name = "records"
    description = "JSON Lines and CSV/TSV: one document per record, streamed; text/title/id/metadata fields."
    media_types = frozenset(_FORMATS_BY_MEDIA_TYPE)
    extensions = frozenset(_FORMATS_BY_EXTENSION)

    def __init__(self) -> None:
        #: Options set in the configuration (validated, only the keys given), under every source's own.
        self.defaults: dict[str, Any] = {}

    def configure(self, options: Mapping[str, Any]) -> None:
        """Take the plugin-wide defaults; a bad value stops start-up with the key that is wrong."""
        try:
            validated = RecordOptions.model_validate(dict(options))
        except ValidationError as err:
            raise ConfigError(f"[plugins.options.{PLUGIN_NAME}]: {describe_error(err)}") from None
        self.defaults = validated.model_dump(exclude_unset=True)

    def options_for(self, source: Source) -> RecordOptions:
        try:
            return RecordOptions.merged(self.defaults, source.options)
        except ValidationError as err:
            raise DocumentLoadError(f"{source.uri}: invalid records options: {describe_error(err)}") from None

    async def load(self, source: Source) -> AsyncIterator[Document]:
        options = self.options_for(source)
        fmt = options.format or format_of(source)
        stream = await asyncio.to_thread(_open, source)
        items = _items(stream, fmt, options, source)
        problems: list[Problem] = []
        batch_size = 1
        try:
            while batch := await asyncio.to_thread(_take, items, batch_size):
                batch_size = min(batch_size * 2, BATCH_RECORDS)
                for item in batch:
                    if isinstance(item, Document):
                        yield item
                        continue
                    problems.append(item)
                    if options.on_error == "fail":
                        raise DocumentLoadError(_summary(source.uri, problems, stopped=True))
                    if options.max_errors and len(problems) >= options.max_errors:
                        raise DocumentLoadError(_summary(source.uri, problems, stopped=True))
        finally:
            items.close()
            stream.close()
        if not problems:
            return
        if options.on_error == "report":
            raise DocumentLoadError(_summary(source.uri, problems, stopped=False))
        log.warning("%s", _summary(source.uri, problems, stopped=False))


class RecordsPlugin:
    """The plugin object the entry point names: it holds the one loader and hands it the configuration."""

    def __init__(self) -> None:
        self.loader = RecordsLoader()

    @hookimpl
    def register_loaders(self, register: Callable[[Loader], None]) -> None:
        register(self.loader)

    @hookimpl
    def opentier_startup(self, settings: Settings) -> None:
        self.loader.configure(settings.plugins.options.get(PLUGIN_NAME, {}))


plugin = RecordsPlugin()


def format_of(source: Source) -> str:
    media_type = (source.media_type or "").split(";")[0].strip().lower()
    fmt = _FORMATS_BY_MEDIA_TYPE.get(media_type) or _FORMATS_BY_EXTENSION.get(source.extension)
    if fmt is None:
        raise DocumentLoadError(
            f"{source.uri}: cannot tell JSON Lines from CSV; set the source option 'format' "
            "to jsonl, csv or tsv"
        )
    return fmt


def _open(source: Source) -> BinaryIO:
    if source.data is not None:
        return io.BytesIO(source.data)
    if source.path is None:
        raise DocumentLoadError(f"{source.uri}: the source has neither data nor a path")
    try:
        return open(source.path, "rb")  # closed by load()
    except OSError as err:
        raise DocumentLoadError(f"{source.uri}: cannot be read: {err.strerror or err}") from err


def _items(
    stream: BinaryIO, fmt: str, options: RecordOptions, source: Source
) -> Generator[Document | Problem, None, None]:
    """Documents and problems, in file order (a plain generator, advanced in a worker thread)."""
    records: Iterator[Record | Problem]
    if fmt == "jsonl":
        records = jsonl_records(stream, encoding=options.encoding, limit=options.max_record_bytes)
    else:
        delimiter = options.delimiter or ("\t" if fmt == "tsv" else ",")
        records = csv_records(
            stream,
            uri=source.uri,
            delimiter=delimiter,
            encoding=options.encoding,
            limit=options.max_record_bytes,
        )
    media_type = _MEDIA_TYPES[fmt]
    for item in records:
        if isinstance(item, Problem):
            yield item
        else:
            yield to_document(
                item, options, uri=source.uri, media_type=media_type, source_metadata=source.metadata
            )


def _take(items: Iterator[Document | Problem], count: int) -> list[Document | Problem]:
    """The next ``count`` items, fewer if they hold about ``BATCH_BYTES`` of text already."""
    batch: list[Document | Problem] = []
    size = 0
    for item in items:
        batch.append(item)
        if isinstance(item, Document):
            size += sum(len(block.text) for block in item.blocks)
        if len(batch) >= count or size >= BATCH_BYTES:
            break
    return batch


def _summary(uri: str, problems: list[Problem], *, stopped: bool) -> str:
    quoted = "; ".join(f"line {p.line}: {p.reason}" for p in problems[:QUOTED_PROBLEMS])
    more = f"; and {len(problems) - QUOTED_PROBLEMS} more" if len(problems) > QUOTED_PROBLEMS else ""
    count = f"{len(problems)} malformed record{'s' if len(problems) != 1 else ''}"
    if stopped:
        return f"{uri}: reading stopped after {count} (the records before were loaded): {quoted}{more}"
    return f"{uri}: {count} skipped, the others were loaded: {quoted}{more}"
