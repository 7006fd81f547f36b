"""``opentier search``: the chunks that best answer a query, with what a citation needs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from google.protobuf import json_format, struct_pb2
from rich.markup import escape
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.cli.client import HostClient, tenant_option
from opentier.cli.host_cmd import run
from opentier.cli.views import out
from opentier.generated.intelligence.v1 import search_pb2

#: Characters of each hit's text shown in the table.
SNIPPET_CHARS = 160


@click.command("search")
@click.argument("query")
@click.option(
    "--collection",
    "-c",
    "collections",
    multiple=True,
    metavar="NAME",
    help="Collection to search (repeat for several); default: every collection of the tenant.",
)
@click.option(
    "--retriever", "-r", help="Retriever: vector, fulltext, hybrid... (default: retrieval.retriever)."
)
@click.option("--reranker", help='Reranker, e.g. diversify; "none" turns the configured one off.')
@click.option("--top-k", "-k", type=click.IntRange(1), help="Most hits to show (default: retrieval.top_k).")
@click.option(
    "--filter",
    "filter_json",
    metavar="JSON",
    help='Metadata filter, e.g. \'{"lang": "en", "year": {"range": {"gte": 2020}}}\' (docs/retrieval.md).',
)
@click.option("--option", "options", multiple=True, metavar="KEY=JSON", help="Retriever option (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON instead of a table.")
@tenant_option
@pass_state
def command(  # noqa: PLR0917 (click passes every option positionally)
    state: CliState,
    query: str,
    collections: Sequence[str],
    retriever: str | None,
    reranker: str | None,
    top_k: int | None,
    filter_json: str | None,
    options: Sequence[str],
    as_json: bool,
    tenant: str,
) -> None:
    """Search the collections for QUERY and show the best chunks, best first.

    Talks to the running host (`opentier up`), like the gateway does.
    """
    filters = _json_object(filter_json, "--filter") if filter_json else None
    extra = dict(_option(text) for text in options)

    async def main() -> search_pb2.SearchResponse:
        async with HostClient(state.settings, tenant=tenant) as client:
            ids = [(await client.collection_named(name)).id for name in collections]
            request = search_pb2.SearchRequest(
                caller=client.caller,
                query=query,
                collection_ids=ids,
                retriever=retriever or "",
                reranker=reranker or "",
                top_k=top_k or 0,
                filters=struct_of(filters) if filters is not None else None,
                options=struct_of(extra) if extra else None,
            )
            response: search_pb2.SearchResponse = await client.call(client.search.Search, request)
            return response

    response = run(main())
    if as_json:
        data = json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if not response.hits:
        out.print("no hits")
        return
    out.print(hits_table(response))


def hits_table(response: search_pb2.SearchResponse) -> Table:
    by = response.retriever + (f", reranked by {response.reranker}" if response.reranker else "")
    table = Table(title=f"{len(response.hits)} hits ({by})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    for column in ("title", "source", "page", "section", "text"):
        table.add_column(column, overflow="fold")
    for number, hit in enumerate(response.hits, start=1):
        table.add_row(
            str(number),
            f"{hit.score:.4f}",
            escape(hit.title or "-"),
            escape(hit.source),
            str(hit.page) if hit.HasField("page") else "-",
            escape(" > ".join(hit.heading_path) or "-"),
            escape(snippet(hit.text)),
        )
    return table


def struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    json_format.ParseDict(data, struct)
    return struct


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter('a JSON object, e.g. \'{"lang": "en"}\'', param_hint=option)
    return value


def _option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{text!r}: write KEY=JSON, e.g. depth=50", param_hint="--option")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw  # a bare word is a string
