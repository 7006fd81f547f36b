"""``opentier ingest``: put a folder, a file or a URL into a collection, with live progress.

Three ways to the host, chosen by the target: a URL is fetched by the host; a path inside the
host's ``ingestion.roots`` is read by the host itself; any other local path is walked here and its
files are streamed to the host one at a time (IngestStream), so the command works without
configuring roots and never holds more than one file in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import click
import grpc.aio

from opentier.cli import CliState, pass_state
from opentier.cli.client import HostClient, remote_error, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import (
    Failure,
    IngestProgress,
    counts_table,
    err,
    failures_table,
    out,
    stage,
    when,
)
from opentier.config import Settings
from opentier.engine import sources
from opentier.errors import AlreadyExistsError, NotFoundError, OpenTierError, SourceRefusedError
from opentier.generated.intelligence.v1 import (
    collections_pb2,
    documents_pb2,
    ingest_pb2,
)
from opentier.host.servicers.ingest import JOB_ID_KEY

#: How often the counts of a running job are fetched for the progress bar.
POLL_SECONDS = 0.5
NOT_INDEXED = [documents_pb2.DOCUMENT_STATUS_FAILED, documents_pb2.DOCUMENT_STATUS_DROPPED]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to ingest, as the user asked for it."""

    target: str
    collection: str
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    recursive: bool = True
    force: bool = False
    delete_missing: bool = False
    create: bool = True

    def options(self) -> ingest_pb2.IngestOptions:
        return ingest_pb2.IngestOptions(
            include=list(self.include),
            exclude=list(self.exclude),
            recursive=self.recursive,
            force=self.force,
            delete_missing=self.delete_missing,
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Where the documents come from and which way they reach the host."""

    #: ``url`` (the host fetches it), ``path`` (the host reads it: inside its roots) or ``files``
    #: (walked here and streamed).
    kind: Literal["url", "path", "files"]
    value: str
    #: For ``files``: the folder that names the documents (the path itself, or a file's folder).
    root: Path | None = None
    folder: bool = False

    @classmethod
    def of(cls, raw: str, roots: Sequence[Path]) -> Target:
        if "://" in raw and urlsplit(raw).scheme:
            return cls("url", raw)
        path = Path(raw).expanduser()
        if not path.exists():
            raise click.BadParameter(f"{raw} does not exist", param_hint="PATH|URL")
        real = path.resolve()
        for root in roots:
            root_real = root.expanduser().resolve()
            if real == root_real or root_real in real.parents:
                return cls("path", str(real))
        folder = path.is_dir()
        return cls("files", str(path), path if folder else path.parent, folder)

    def as_files(self) -> Target:
        path = Path(self.value)
        folder = path.is_dir()
        return Target("files", self.value, path if folder else path.parent, folder)


@dataclass(slots=True)
class Tracker:
    """The job being followed, for the message after Ctrl-C."""

    job_id: str | None = None
    streaming: bool = False
    #: Every record of a stream was handed to gRPC: the host completes the job even without us.
    sent_all: bool = False


@dataclass(slots=True)
class Outcome:
    job: ingest_pb2.IngestJob
    failures: list[Failure] = field(default_factory=list)


@click.command("ingest")
@click.argument("target", metavar="PATH|URL")
@click.option("--collection", "-c", required=True, metavar="NAME", help="Collection to ingest into.")
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only files whose path relative to the folder matches (repeatable; default: all).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out matching files; wins over --include (repeatable).",
)
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Walk sub-folders.")
@click.option("--force", is_flag=True, help="Process every document again, even when unchanged.")
@click.option(
    "--delete-missing",
    is_flag=True,
    help="Delete the collection's documents from this folder whose file is gone.",
)
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the collection when the tenant has none of that name.",
)
@tenant_option
@pass_state
def command(  # noqa: PLR0917 (click passes every option positionally)
    state: CliState,
    target: str,
    collection: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    recursive: bool,
    force: bool,
    delete_missing: bool,
    create: bool,
    tenant: str,
) -> None:
    """Ingest PATH (a file or folder) or URL into a collection, showing progress.

    \b
    - a URL (http/https) is fetched by the host, within its URL limits;
    - a path inside the host's ingestion.roots is read by the host itself
      (documents are named by their path relative to that root);
    - any other local path is walked here and its files are sent to the host
      one at a time (documents are named by their path relative to PATH, so
      the folder is the collection's root: with --delete-missing, documents
      of the collection that the folder no longer has are deleted).

    Unchanged documents are skipped, changed ones replace their chunks.
    Ends with a summary and a table of the documents that failed or were
    dropped; exits with status 1 when a document failed. Ctrl-C stops
    following: the job goes on on the host (`opentier jobs`), unless files
    were still being sent, which cancels it. Needs the running host
    (`opentier up`).
    """
    plan = Plan(target, collection, include, exclude, recursive, force, delete_missing, create)
    source = Target.of(target, state.settings.ingestion.roots)
    if delete_missing and source.kind == "files" and not source.folder:
        raise click.UsageError("--delete-missing needs a folder")
    tracker = Tracker()
    try:
        outcome = run(ingest(state.settings, plan, source, tenant=tenant, tracker=tracker))
    except KeyboardInterrupt:
        _interrupted(tracker)
        sys.exit(130)
    out.print(f"Ingested {target} into {collection!r}: job {outcome.job.id}")
    out.print(counts_table(outcome.job))
    if outcome.job.status == ingest_pb2.JOB_STATUS_FAILED:
        out.print(f"the job failed: {outcome.job.error.message}")
    if outcome.failures:
        out.print(failures_table(outcome.failures))
    failed = outcome.job.counts.failed or any(f.status != "dropped" for f in outcome.failures)
    sys.exit(1 if failed or outcome.job.status != ingest_pb2.JOB_STATUS_SUCCEEDED else 0)


async def ingest(settings: Settings, plan: Plan, source: Target, *, tenant: str, tracker: Tracker) -> Outcome:
    """Run the ingestion the plan describes and return the finished job with its failures."""
    async with HostClient(settings, tenant=tenant) as client:
        collection = await _collection(client, plan)
        if source.kind != "files":
            request = ingest_pb2.IngestRequest(
                caller=client.caller, collection_id=collection.id, options=plan.options()
            )
            setattr(request, source.kind, source.value)
            try:
                return await _finish(client, collection, await _follow(client, request, plan, tracker))
            except SourceRefusedError as refused:
                if source.kind == "url" or tracker.job_id is not None:
                    raise
                err.print(f"the host does not read {source.value} ({refused.message}); sending the files")
            source = await asyncio.to_thread(source.as_files)
        limit = settings.ingestion.max_upload_bytes
        job, skipped = await _stream(client, collection, source, plan=plan, tracker=tracker, limit=limit)
        outcome = await _finish(client, collection, job)
        outcome.failures[:0] = skipped
        return outcome


async def _collection(client: HostClient, plan: Plan) -> collections_pb2.Collection:
    try:
        return await client.collection_named(plan.collection)
    except NotFoundError:
        if not plan.create:
            raise NotFoundError(
                f"tenant {client.tenant!r} has no collection named {plan.collection!r}; "
                "create it with `opentier collections create` or leave out --no-create"
            ) from None
    request = collections_pb2.CreateCollectionRequest(caller=client.caller, name=plan.collection)
    try:
        created: collections_pb2.Collection = await client.call(client.collections.CreateCollection, request)
    except AlreadyExistsError:  # created meanwhile by someone else
        return await client.collection_named(plan.collection)
    err.print(f"created collection {created.name!r} (embedder {created.embedder})")
    return created


async def _follow(
    client: HostClient, request: ingest_pb2.IngestRequest, plan: Plan, tracker: Tracker
) -> ingest_pb2.IngestJob:
    """Run an Ingest call: progress from its events, counts polled, its summary returned."""
    summary: ingest_pb2.IngestJob | None = None
    poller: asyncio.Task[None] | None = None
    with IngestProgress(f"ingesting into {plan.collection}") as bar:
        try:
            async for event in client.stream(client.ingest.Ingest, request):
                kind = event.WhichOneof("event")
                if kind == "started":
                    tracker.job_id = event.started.id
                    bar.counts(event.started.counts)
                    poller = asyncio.create_task(_poll(client, event.started.id, bar))
                elif kind == "progress":
                    bar.current(event.progress.source)
                elif kind == "summary":
                    summary = event.summary
        finally:
            await _stop(poller)
        if summary is None:
            raise OpenTierError("the host ended the ingestion stream without its summary")
        bar.counts(summary.counts)
    return summary


async def _stream(
    client: HostClient,
    collection: collections_pb2.Collection,
    source: Target,
    *,
    plan: Plan,
    tracker: Tracker,
    limit: int,
) -> tuple[ingest_pb2.IngestJob, list[Failure]]:
    """Walk the source here and send its files through IngestStream, one file in memory at a time."""
    skipped: list[Failure] = []
    requests = _file_records(
        client, collection, source, plan=plan, limit=limit, skipped=skipped, tracker=tracker
    )
    tracker.streaming = True
    poller: asyncio.Task[None] | None = None
    with IngestProgress(f"sending {source.value} to {plan.collection}") as bar:
        call = client.open_stream(client.ingest.IngestStream, requests)
        try:
            metadata = await call.initial_metadata()
            job_id = next((str(v) for k, v in metadata or () if k == JOB_ID_KEY), None)
            if job_id is not None:
                tracker.job_id = job_id
                poller = asyncio.create_task(_poll(client, job_id, bar))
            job: ingest_pb2.IngestJob = await call
        except grpc.aio.AioRpcError as error:
            raise remote_error(error, client.target) from None
        finally:
            await _stop(poller)
        bar.counts(job.counts)
    return job, skipped


async def _file_records(
    client: HostClient,
    collection: collections_pb2.Collection,
    source: Target,
    *,
    plan: Plan,
    limit: int,
    skipped: list[Failure],
    tracker: Tracker,
) -> AsyncIterator[ingest_pb2.IngestStreamRequest]:
    yield ingest_pb2.IngestStreamRequest(
        caller=client.caller,
        start=ingest_pb2.IngestStreamStart(
            collection_id=collection.id, options=ingest_pb2.IngestOptions(force=plan.force)
        ),
    )
    assert source.root is not None
    sent: set[str] = set()
    entries = sources.walk(
        source.value, [source.root], include=plan.include, exclude=plan.exclude, recursive=plan.recursive
    )
    for entry in entries:
        sent.add(entry.source)
        try:
            data = await asyncio.to_thread(_read, entry.path, limit)
        except OSError as error:
            skipped.append(Failure(entry.source, "loading", f"cannot read: {error.strerror}", "not sent"))
            continue
        if data is None:
            reason = f"larger than ingestion.max_upload_bytes ({limit} bytes)"
            skipped.append(Failure(entry.source, "loading", reason, "not sent"))
            continue
        record = ingest_pb2.IngestRecord(
            source=entry.source, file=ingest_pb2.UploadedFile(filename=entry.path.name, data=data)
        )
        del data  # the record holds the bytes; only one file is in memory at a time
        yield ingest_pb2.IngestStreamRequest(record=record)
    if plan.delete_missing:
        async for document in client.documents_of(collection.id):
            if document.source not in sent:
                yield ingest_pb2.IngestStreamRequest(
                    record=ingest_pb2.IngestRecord(source=document.source, remove=True)
                )
    tracker.sent_all = True


async def _poll(client: HostClient, job_id: str, bar: IngestProgress) -> None:
    """Refresh the bar from the job's counts until cancelled (the job may run on another host)."""
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            job = await client.job(job_id)
        except OpenTierError:
            return  # the call being followed reports the real problem
        bar.counts(job.counts)


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _finish(
    client: HostClient, collection: collections_pb2.Collection, job: ingest_pb2.IngestJob
) -> Outcome:
    """The job with the documents this job failed or dropped (touched since it was created)."""
    since = when(job.created_at)
    failures = []
    async for document in client.documents_of(collection.id, NOT_INDEXED):
        touched = when(document.updated_at)
        if since is None or touched is None or touched < since:
            continue
        if document.status == documents_pb2.DOCUMENT_STATUS_DROPPED:
            failures.append(Failure(document.source, "cleaning", document.error.message, "dropped"))
        else:
            failures.append(Failure(document.source, stage(document.failed_stage), document.error.message))
    return Outcome(job, failures)


def _read(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or ``None`` when it is larger than ``limit``."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def _interrupted(tracker: Tracker) -> None:
    if tracker.job_id is None:
        err.print("interrupted before the host created a job: nothing was ingested")
    elif tracker.streaming and not tracker.sent_all:
        err.print(
            f"interrupted while sending: the host cancels job {tracker.job_id}; "
            "documents already stored stay stored"
        )
    else:
        err.print(
            f"stopped following job {tracker.job_id}; it goes on on the host: "
            f"`opentier jobs show {tracker.job_id}`, `opentier jobs cancel {tracker.job_id}`"
        )
