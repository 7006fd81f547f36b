"""``opentier documents``: what a collection holds, with each document's status."""

from __future__ import annotations

import click
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.client import HostClient, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import document_status, out, shown_time, size, stage
from opentier.generated.intelligence.v1 import documents_pb2

STATUSES = {
    "pending": documents_pb2.DOCUMENT_STATUS_PENDING,
    "processing": documents_pb2.DOCUMENT_STATUS_PROCESSING,
    "ready": documents_pb2.DOCUMENT_STATUS_READY,
    "failed": documents_pb2.DOCUMENT_STATUS_FAILED,
    "dropped": documents_pb2.DOCUMENT_STATUS_DROPPED,
}


@click.command("documents")
@click.option("--collection", "-c", required=True, metavar="NAME", help="Collection to list.")
@click.option(
    "--status",
    "statuses",
    type=click.Choice(sorted(STATUSES)),
    multiple=True,
    help="Only documents in this status (repeatable; default: all).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most documents to show."
)
@tenant_option
@pass_state
def command(state: CliState, collection: str, statuses: tuple[str, ...], limit: int, tenant: str) -> None:
    """List the documents of a collection, ordered by source.

    Shows each document's status (ready, failed, dropped, ...), chunks, size,
    version and, for a failed or dropped one, the stage and the reason.
    `opentier documents -c NAME --status failed` lists what needs attention.
    """

    async def main() -> tuple[list[documents_pb2.Document], bool]:
        async with HostClient(state.settings, tenant=tenant) as client:
            found = await client.collection_named(collection)
            documents: list[documents_pb2.Document] = []
            async for document in client.documents_of(found.id, [STATUSES[s] for s in statuses]):
                if len(documents) == limit:
                    return documents, True
                documents.append(document)
            return documents, False

    documents, more = run(main())
    if not documents:
        out.print(f"collection {collection!r} has no documents" + (" in that status" if statuses else ""))
        return
    table = Table()
    table.add_column("source", overflow="fold")
    table.add_column("status")
    for column in ("chunks", "size", "version"):
        table.add_column(column, justify="right")
    table.add_column("updated")
    table.add_column("problem", overflow="fold")
    for document in documents:
        problem = ""
        if document.status == documents_pb2.DOCUMENT_STATUS_FAILED:
            problem = f"{stage(document.failed_stage)}: {document.error.message}"
        elif document.status == documents_pb2.DOCUMENT_STATUS_DROPPED:
            problem = document.error.message
        table.add_row(
            document.source,
            document_status(document.status),
            str(document.chunk_count),
            size(document.size_bytes) if document.size_bytes else "-",
            str(document.version),
            shown_time(document.updated_at),
            problem,
        )
    out.print(table)
    if more:
        out.print(f"(first {limit}; --limit shows more)")
