"""``opentier collections``: list, create and delete collections on the running host."""

from __future__ import annotations

import click
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.client import HostClient, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import out, shown_time
from opentier.generated.intelligence.v1 import collections_pb2


@click.group("collections", invoke_without_command=True)
@tenant_option
@click.pass_context
def command(ctx: click.Context, tenant: str) -> None:
    """Collections: named sets of documents that are searched together.

    Without a subcommand, lists the tenant's collections. Each collection is
    bound for life to the embedder that indexes it. Talks to the running host
    (`opentier up`); the host token comes from OPENTIER_HOST__TOKEN or
    <data_dir>/host.token.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command, tenant=tenant)


@command.command("list")
@tenant_option
@pass_state
def list_command(state: CliState, tenant: str) -> None:
    """List the collections with their document and chunk counts."""

    async def main() -> list[collections_pb2.Collection]:
        async with HostClient(state.settings, tenant=tenant) as client:
            return await client.all_collections()

    collections = run(main())
    if not collections:
        out.print(f"tenant {tenant!r} has no collections; create one with `opentier collections create NAME`")
        return
    table = Table()
    table.add_column("name", overflow="fold")
    table.add_column("documents", justify="right")
    table.add_column("chunks", justify="right")
    for column in ("embedder", "created", "description"):
        table.add_column(column, overflow="fold")
    for collection in collections:
        table.add_row(
            collection.name,
            str(collection.document_count),
            str(collection.chunk_count),
            f"{collection.embedder} ({collection.dimensions})",
            shown_time(collection.created_at),
            collection.description,
        )
    out.print(table)


@command.command("create")
@click.argument("name")
@click.option("--embedder", help="Embedder component (default: ingestion.embedder of the host).")
@click.option("--description", default="", help="What the collection holds.")
@tenant_option
@pass_state
def create_command(state: CliState, name: str, embedder: str | None, description: str, tenant: str) -> None:
    """Create the collection NAME (fails when the tenant has one of that name)."""

    async def main() -> collections_pb2.Collection:
        async with HostClient(state.settings, tenant=tenant) as client:
            request = collections_pb2.CreateCollectionRequest(
                caller=client.caller, name=name, description=description, embedder=embedder or ""
            )
            return await client.call(client.collections.CreateCollection, request)

    created = run(main())
    out.print(
        f"created collection {created.name!r} ({created.id}), embedded by {created.embedder} "
        f"({created.dimensions} dimensions)"
    )


@command.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@tenant_option
@pass_state
def delete_command(state: CliState, name: str, yes: bool, tenant: str) -> None:
    """Delete the collection NAME with all its documents, chunks and jobs."""
    if not yes:
        click.confirm(f"Delete collection {name!r} with all its documents?", abort=True)

    async def main() -> collections_pb2.DeleteCollectionResponse:
        async with HostClient(state.settings, tenant=tenant) as client:
            collection = await client.collection_named(name)
            request = collections_pb2.DeleteCollectionRequest(
                caller=client.caller, collection_id=collection.id
            )
            deleted: collections_pb2.DeleteCollectionResponse = await client.call(
                client.collections.DeleteCollection, request
            )
            return deleted

    deleted = run(main())
    out.print(
        f"deleted collection {name!r}: {deleted.documents_deleted} documents, {deleted.chunks_deleted} chunks"
    )
