"""SearchService and `opentier search` end to end: the real host on port 0, the real PostgreSQL, the
retrieval plugins; the command runs as a subprocess, as a user's shell would run it."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from opentier.config import Settings
from opentier.generated.intelligence.v1 import collections_pb2, ingest_pb2, search_pb2, search_pb2_grpc
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins
from tests.engine.helpers import HashEmbedder, plugin
from tests.engine.searching import RETRIEVER_PLUGINS, stand_ins

from .conftest import AUTH, TOKEN, Host, host_settings, trailer
from .test_cli import opentier


@pytest_asyncio.fixture
async def search_host(db_settings: Settings, tmp_path: Path) -> AsyncIterator[Host]:
    """The host of tests/host/conftest.py, with the retriever plugins and the stand-in retriever."""
    root = tmp_path / "root"
    root.mkdir()
    settings = host_settings(db_settings, tmp_path / "state", root)  # default retrieval: hybrid
    embedder = HashEmbedder()
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "basic-cleaners", *RETRIEVER_PLUGINS]),
        extra=[("test", plugin(embedder)), ("stand-ins", stand_ins())],
    )
    server = HostServer(settings, plugins, TOKEN, runtime=HostRuntime(settings, plugins.registry))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            yield Host(server, settings, embedder, channel, root, f"tenant-{uuid.uuid4().hex[:10]}")
    finally:
        await server.stop()


def stub(host: Host) -> search_pb2_grpc.SearchServiceAsyncStub:
    return search_pb2_grpc.SearchServiceStub(host.channel)


def struct(data: dict[str, object]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(data)
    return value


async def add_files(
    host: Host, collection: collections_pb2.Collection, files: dict[str, str], team: str
) -> None:
    folder = host.root / uuid.uuid4().hex[:8]
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    options = ingest_pb2.IngestOptions(metadata=struct({"team": team, "year": 2024}))
    events = await host.ingest_all(
        ingest_pb2.IngestRequest(
            caller=host.caller(), collection_id=collection.id, path=str(folder), options=options
        )
    )
    assert events[-1].summary.status == ingest_pb2.JOB_STATUS_SUCCEEDED


def name(hit: search_pb2.SearchHit) -> str:
    """The file name of a hit's source (sources are paths relative to the host's root)."""
    return Path(hit.source).name


async def search(host: Host, **fields: object) -> search_pb2.SearchResponse:
    request = search_pb2.SearchRequest(caller=host.caller(), **fields)  # type: ignore[arg-type]
    response: search_pb2.SearchResponse = await stub(host).Search(request, metadata=AUTH, timeout=10)
    return response


async def test_search_returns_cited_hits_of_the_callers_tenant(search_host: Host) -> None:
    host = search_host
    docs = await host.create_collection("docs")
    await add_files(
        host,
        docs,
        {
            "wings.txt": "# Wings\n\nWings produce lift from the air flowing over them.",
            "engines.txt": "Jet engines burn fuel and push hot gas backwards.",
        },
        team="aero",
    )
    response = await search(host, query="how do wings make lift", collection_ids=[docs.id], top_k=1)
    assert response.retriever == "hybrid" and response.reranker == ""
    [hit] = response.hits
    assert (name(hit), hit.title, hit.collection_id) == ("wings.txt", "wings.txt", docs.id)
    assert "Wings produce lift" in hit.text and hit.document_id and hit.chunk_id
    assert 0 < hit.score <= 1
    assert hit.span.char_end > hit.span.char_start >= 0
    assert not hit.HasField("page"), "a text file has no pages"
    assert hit.metadata["team"] == "aero"

    other = host.caller(f"tenant-{uuid.uuid4().hex[:10]}")
    empty = await stub(host).Search(
        search_pb2.SearchRequest(caller=other, query="how do wings make lift"), metadata=AUTH, timeout=10
    )
    assert list(empty.hits) == [], "another tenant sees nothing, not even with an identical query"


async def test_filters_retriever_and_reranker_travel_through_the_contract(search_host: Host) -> None:
    host = search_host
    docs = await host.create_collection("docs")
    await add_files(host, docs, {"a.txt": "Propeller blades turn.", "b.txt": "Propeller hubs hold."}, "aero")
    await add_files(host, docs, {"c.txt": "Propeller shafts spin."}, "marine")

    marine = await search(host, query="propeller", filters=struct({"team": "marine"}))
    assert [name(hit) for hit in marine.hits] == ["c.txt"]
    ranged = await search(host, query="propeller", filters=struct({"year": {"range": {"gte": 2024}}}))
    assert {name(hit) for hit in ranged.hits} == {"a.txt", "b.txt", "c.txt"}

    fused = await search(host, query="propeller", retriever="hybrid", reranker="reverse", top_k=3)
    assert (fused.retriever, fused.reranker) == ("hybrid", "reverse")
    plain = await search(host, query="propeller", retriever="hybrid", top_k=3)
    assert [hit.chunk_id for hit in fused.hits] == [hit.chunk_id for hit in reversed(plain.hits)]
    deep = await search(
        host, query="propeller", retriever="hybrid", options=struct({"weights": {"keyword": 1}})
    )
    assert len(deep.hits) == 3


@pytest.mark.parametrize(
    ("fields", "status", "code", "words"),
    [
        (
            {"query": "x", "collection_ids": [str(uuid.uuid4())]},
            grpc.StatusCode.NOT_FOUND,
            "not_found",
            "does not exist",
        ),
        (
            {"query": "x", "collection_ids": ["nope"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
            "not a valid id",
        ),
        (
            {"query": "x", "retriever": "nope"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "component_unknown",
            "available: fulltext, hybrid",
        ),
        (
            {"query": "x", "reranker": "nope"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "component_unknown",
            "available: diversify",
        ),
        ({"query": " "}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request", "the query is empty"),
        (
            {"query": "x", "filters": {"year": {"range": {"after": 1}}}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
            "filters.year.range: unknown bound after",
        ),
    ],
)
async def test_errors_map_to_status_codes(
    search_host: Host, fields: dict[str, object], status: grpc.StatusCode, code: str, words: str
) -> None:
    await search_host.create_collection("docs")
    if "filters" in fields:
        fields["filters"] = struct(fields["filters"])  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search(search_host, **fields)
    assert info.value.code() == status
    assert trailer(info.value) == code
    assert words in (info.value.details() or "")


async def test_an_empty_tenant_is_refused(search_host: Host) -> None:
    request = search_pb2.SearchRequest(caller=search_host.caller(""), query="x")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(search_host).Search(request, metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(info.value) == "invalid_request"


# --- the `opentier search` command ---------------------------------------------------------------


async def test_the_search_command_prints_a_table_and_json(search_host: Host) -> None:
    host = search_host
    docs = await host.create_collection("manuals")
    await add_files(
        host,
        docs,
        {
            "wings.txt": "Wings produce lift from the air flowing over them.",
            "fuel.txt": "Fuel burns in engines.",
        },
        team="aero",
    )
    done = await opentier(host, "search", "wings lift", "--collection", "manuals", "--top-k", "1")
    assert done.code == 0, done.err
    assert "1 hits (hybrid)" in done.out
    assert re.search(
        r"│\s+1 │\s+0\.\d{4} │ wings\.txt\s+│ \S+/wings\.txt\s+│ -\s+│ -\s+│ Wings produce lift", done.out
    ), done.out

    done = await opentier(
        host, "search", "wings", "--filter", '{"team": "marine"}', "--retriever", "vector", "--json"
    )
    assert done.code == 0, done.err
    assert json.loads(done.out) == {"hits": [], "retriever": "vector", "reranker": ""}, (
        "the filter excludes all"
    )

    done = await opentier(host, "search", "wings", "--reranker", "diversify", "--json", "-k", "2")
    data = json.loads(done.out)
    assert data["reranker"] == "diversify" and len(data["hits"]) == 2
    assert {Path(hit["source"]).name for hit in data["hits"]} == {"wings.txt", "fuel.txt"}
    assert data["hits"][0]["metadata"]["team"] == "aero"
    assert data["hits"][0]["span"]["char_start"] == 0 < data["hits"][0]["span"]["char_end"]


async def test_the_search_command_reports_errors(search_host: Host) -> None:
    done = await opentier(search_host, "search", "wings", "--collection", "missing")
    assert done.code == 2 and "no collection named 'missing'" in done.err, done.err
    done = await opentier(search_host, "search", "wings", "--filter", "{not json")
    assert done.code == 2 and "--filter" in done.err and "not JSON" in done.err, done.err
    done = await opentier(search_host, "search", "wings", "--filter", '{"year": {"range": 1}}')
    assert done.code == 2 and "error [invalid_request]: filters.year.range" in done.err, done.err
    done = await opentier(search_host, "search", "wings", "--retriever", "nope")
    assert done.code == 2 and "error [component_unknown]: no retriever named 'nope'" in done.err, done.err
