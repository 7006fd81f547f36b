"""``opentier jobs``: the tenant's ingestion jobs; show one, cancel one."""

from __future__ import annotations

import click
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.client import HostClient, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import counts_table, job_status, jobs_table, out, shown_time
from opentier.generated.intelligence.v1 import common_pb2, ingest_pb2

STATUSES = {
    "queued": ingest_pb2.JOB_STATUS_QUEUED,
    "running": ingest_pb2.JOB_STATUS_RUNNING,
    "succeeded": ingest_pb2.JOB_STATUS_SUCCEEDED,
    "failed": ingest_pb2.JOB_STATUS_FAILED,
    "cancelled": ingest_pb2.JOB_STATUS_CANCELLED,
}


@click.group("jobs", invoke_without_command=True)
@click.option("--collection", "-c", metavar="NAME", help="Only jobs of this collection.")
@click.option(
    "--status",
    "statuses",
    type=click.Choice(list(STATUSES)),
    multiple=True,
    help="Only jobs in this status (repeatable; default: all).",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Most jobs to show.")
@tenant_option
@click.pass_context
def command(
    ctx: click.Context, collection: str | None, statuses: tuple[str, ...], limit: int, tenant: str
) -> None:
    """Ingestion jobs, newest first; `jobs show ID` and `jobs cancel ID`.

    Every ingestion (`opentier ingest`, the gRPC Ingest calls) is a job kept
    in PostgreSQL: it survives the client and a restart of the host.
    """
    if ctx.invoked_subcommand is not None:
        return
    state = ctx.find_object(CliState)
    assert state is not None

    async def main() -> tuple[list[ingest_pb2.IngestJob], dict[str, str]]:
        async with HostClient(state.settings, tenant=tenant) as client:
            names = {c.id: c.name for c in await client.all_collections()}
            collection_id = ""
            if collection is not None:
                collection_id = (await client.collection_named(collection)).id
            request = ingest_pb2.ListJobsRequest(
                caller=client.caller,
                collection_id=collection_id,
                statuses=[STATUSES[s] for s in statuses],
                page=common_pb2.PageRequest(page_size=limit),
            )
            reply = await client.call(client.ingest.ListJobs, request)
            return list(reply.jobs), names

    jobs, names = run(main())
    if not jobs:
        out.print("no ingestion jobs" + (" match" if collection or statuses else " yet"))
        return
    out.print(jobs_table(jobs, names))


@command.command("show")
@click.argument("job_id", metavar="ID")
@tenant_option
@pass_state
def show(state: CliState, job_id: str, tenant: str) -> None:
    """Show one job: status, source, options, counts and times."""

    async def main() -> tuple[ingest_pb2.IngestJob, str]:
        async with HostClient(state.settings, tenant=tenant) as client:
            job = await client.job(job_id)
            names = {c.id: c.name for c in await client.all_collections()}
            return job, names.get(job.collection_id, job.collection_id)

    job, collection = run(main())
    details = Table(show_header=False, title=f"Job {job.id}", title_justify="left")
    details.add_column("what")
    details.add_column("value", overflow="fold")
    options = job.options
    rows = [
        ("collection", collection),
        ("status", job_status(job.status)),
        ("source", job.source or "-"),
        ("created by", job.created_by or "-"),
        ("created", shown_time(job.created_at)),
        ("started", shown_time(job.started_at)),
        ("finished", shown_time(job.finished_at)),
        ("include", ", ".join(options.include) or "-"),
        ("exclude", ", ".join(options.exclude) or "-"),
        ("force", "yes" if options.force else "no"),
        ("delete missing", "yes" if options.delete_missing else "no"),
    ]
    if job.status == ingest_pb2.JOB_STATUS_FAILED:
        rows.append(("error", f"[{job.error.code}] {job.error.message}"))
    for name, value in rows:
        details.add_row(name, value)
    out.print(details)
    out.print(counts_table(job))


@command.command("cancel")
@click.argument("job_id", metavar="ID")
@tenant_option
@pass_state
def cancel(state: CliState, job_id: str, tenant: str) -> None:
    """Stop a queued or running job; documents already stored stay stored."""

    async def main() -> ingest_pb2.IngestJob:
        async with HostClient(state.settings, tenant=tenant) as client:
            request = ingest_pb2.CancelJobRequest(caller=client.caller, job_id=job_id)
            return await client.call(client.ingest.CancelJob, request)

    job = run(main())
    counts = job.counts
    out.print(
        f"job {job.id} is {job_status(job.status)}: {counts.items_done}/{counts.items_total} items done, "
        f"{counts.created + counts.updated} documents indexed"
    )
