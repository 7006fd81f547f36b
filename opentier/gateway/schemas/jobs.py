"""Ingestion jobs: the progress of an upload or a fetch, stored by the host."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from opentier.gateway.schemas.common import PageQuery, Problem, problem_of, time_of
from opentier.gateway.schemas.documents import split_list
from opentier.generated.intelligence.v1 import ingest_pb2

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

JOB_STATUS: dict[JobStatus, ingest_pb2.JobStatus.ValueType] = {
    "queued": ingest_pb2.JOB_STATUS_QUEUED,
    "running": ingest_pb2.JOB_STATUS_RUNNING,
    "succeeded": ingest_pb2.JOB_STATUS_SUCCEEDED,
    "failed": ingest_pb2.JOB_STATUS_FAILED,
    "cancelled": ingest_pb2.JOB_STATUS_CANCELLED,
}
_STATUS_NAME = {value: name for name, value in JOB_STATUS.items()}
#: Statuses after which a job never changes.
FINISHED: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})


class JobListQuery(PageQuery):
    collection_id: str | None = Field(
        default=None, max_length=200, description="Only this collection's jobs."
    )
    status: list[JobStatus] | None = Field(
        default=None, description="Only jobs in these statuses (comma-separated or repeated)."
    )

    _split = field_validator("status", mode="before")(split_list)


class JobCounts(BaseModel):
    """Per-document outcomes so far; `items_done / items_total` is the progress."""

    documents_seen: int
    created: int
    updated: int
    unchanged: int
    deleted: int
    dropped: int
    failed: int
    chunks_written: int
    items_total: int
    items_done: int

    @classmethod
    def from_pb(cls, counts: ingest_pb2.IngestCounts) -> JobCounts:
        return cls(
            documents_seen=counts.documents_seen,
            created=counts.created,
            updated=counts.updated,
            unchanged=counts.unchanged,
            deleted=counts.deleted,
            dropped=counts.dropped,
            failed=counts.failed,
            chunks_written=counts.chunks_written,
            items_total=counts.items_total,
            items_done=counts.items_done,
        )


class Job(BaseModel):
    id: str
    collection_id: str
    status: JobStatus | None = Field(description="`succeeded` once every document is processed.")
    finished: bool = Field(description="True when the status can no longer change.")
    source: str = Field(description="What was ingested: a file name, a URL.")
    counts: JobCounts
    progress: float | None = Field(description="Share of the work items done, 0 to 1; null before known.")
    error: Problem | None = Field(description="Why the job itself failed.")
    created_by: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_pb(cls, message: ingest_pb2.IngestJob) -> Job:
        counts = JobCounts.from_pb(message.counts)
        status = _STATUS_NAME.get(message.status)
        return cls(
            id=message.id,
            collection_id=message.collection_id,
            status=status,
            finished=status in FINISHED,
            source=message.source,
            counts=counts,
            progress=(counts.items_done / counts.items_total) if counts.items_total else None,
            error=problem_of(message),
            created_by=message.created_by,
            created_at=time_of(message, "created_at"),
            started_at=time_of(message, "started_at"),
            finished_at=time_of(message, "finished_at"),
        )


class JobList(BaseModel):
    jobs: list[Job] = Field(description="Newest first.")
    next_page_token: str | None = Field(
        description="Pass as `page_token` for the next page; null on the last."
    )


class JobAccepted(BaseModel):
    """The ingestion job that processes the upload or fetch; follow it at `GET /v1/jobs/{job_id}`."""

    job: Job
