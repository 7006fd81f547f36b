"""How the ingestion commands show things: tables of jobs, counts and failures, a progress bar."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from opentier.generated.intelligence.v1 import documents_pb2, ingest_pb2

#: Tables and summaries go to stdout; the live progress bar to stderr.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def job_status(value: ingest_pb2.JobStatus.ValueType) -> str:
    return ingest_pb2.JobStatus.Name(value).removeprefix("JOB_STATUS_").lower()


def document_status(value: documents_pb2.DocumentStatus.ValueType) -> str:
    return documents_pb2.DocumentStatus.Name(value).removeprefix("DOCUMENT_STATUS_").lower()


def stage(value: documents_pb2.IngestStage.ValueType) -> str:
    return documents_pb2.IngestStage.Name(value).removeprefix("INGEST_STAGE_").lower()


def when(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    """The moment in local time, or ``None`` for an unset timestamp."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC).astimezone()


def shown_time(stamp: timestamp_pb2.Timestamp) -> str:
    moment = when(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"  # pragma: no cover


def elapsed_seconds(job: ingest_pb2.IngestJob) -> float | None:
    begin = when(job.started_at) or when(job.created_at)
    end = when(job.finished_at)
    if begin is None or end is None:
        return None
    return max((end - begin).total_seconds(), 0.0)


def job_source(job: ingest_pb2.IngestJob) -> str:
    return job.source or "-"


def counts_table(job: ingest_pb2.IngestJob) -> Table:
    counts = job.counts
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("status", job_status(job.status)),
        ("items", f"{counts.items_done}/{counts.items_total}"),
        ("created", str(counts.created)),
        ("updated", str(counts.updated)),
        ("unchanged", str(counts.unchanged)),
        ("deleted", str(counts.deleted)),
        ("dropped", str(counts.dropped)),
        ("failed", str(counts.failed)),
        ("chunks", str(counts.chunks_written)),
    ]
    seconds = elapsed_seconds(job)
    if seconds is not None:
        rows.append(("elapsed", f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"))
        rate = counts.chunks_written / seconds if seconds > 0 else 0.0
        rows.append(("chunks/s", f"{rate:.1f}"))
    for name, value in rows:
        table.add_row(name, value)
    return table


@dataclass(frozen=True, slots=True)
class Failure:
    source: str
    stage: str
    reason: str
    status: str = "failed"


def failures_table(failures: Iterable[Failure]) -> Table:
    table = Table(title="Documents not indexed", title_justify="left")
    table.add_column("source", overflow="fold")
    table.add_column("status")
    table.add_column("stage")
    table.add_column("reason", overflow="fold")
    for failure in failures:
        table.add_row(failure.source, failure.status, failure.stage, failure.reason)
    return table


def jobs_table(jobs: Iterable[ingest_pb2.IngestJob], names: dict[str, str]) -> Table:
    table = Table()
    for column in ("id", "collection", "status", "source"):
        table.add_column(column, overflow="fold")
    for column in ("items", "indexed", "failed", "chunks"):
        table.add_column(column, justify="right")
    table.add_column("submitted")
    for job in jobs:
        counts = job.counts
        table.add_row(
            job.id,
            names.get(job.collection_id, job.collection_id),
            job_status(job.status),
            job_source(job),
            f"{counts.items_done}/{counts.items_total}",
            str(counts.created + counts.updated),
            str(counts.failed),
            str(counts.chunks_written),
            shown_time(job.created_at),
        )
    return table


class IngestProgress:
    """A live bar of items done over items known, with documents per second (``with`` block)."""

    def __init__(self, label: str, console: Console = err) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}", style="dim"),
            console=console,
            transient=True,
        )
        self._label = label
        self._task: TaskID | None = None
        self._began = time.monotonic()

    def __enter__(self) -> IngestProgress:
        self._progress.start()
        self._task = self._progress.add_task(self._label, total=None, rate="", current="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def counts(self, counts: ingest_pb2.IngestCounts) -> None:
        assert self._task is not None
        seconds = max(time.monotonic() - self._began, 1e-6)
        self._progress.update(
            self._task,
            total=counts.items_total or None,
            completed=counts.items_done,
            rate=f"{counts.documents_seen / seconds:.1f} docs/s",
        )

    def current(self, source: str) -> None:
        assert self._task is not None
        self._progress.update(self._task, current=source[-60:])
