"""URL and folder sources against real servers and files: limits, refusals, and a corrupt PDF that
fails alone while the rest of its folder is stored."""

from __future__ import annotations

import asyncio
import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from opentier.config import IngestionSettings
from opentier.engine import sources
from opentier.engine.collections import Collections
from opentier.engine.jobs import Ingestion, ItemSpec, JobOptions
from opentier.errors import DocumentLoadError, SourceRefusedError
from opentier.plugin_manager import PluginSelection, load_plugins

from .helpers import plugin

PAGE = b"<html><head><title>Flaps</title></head><body><nav>menu</nav><main><h1>Flaps</h1><p>Flaps add lift at low speed.</p></main></body></html>"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/page.html":
            self._send(200, PAGE, "text/html; charset=utf-8")
        elif self.path == "/big":
            self._send(200, b"x" * 5000, "text/plain")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/page.html")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        else:
            self._send(404, b"not here", "text/plain")

    def _send(self, status: int, body: bytes, media: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def allowing(**extra: object) -> IngestionSettings:
    return IngestionSettings(allow_private_urls=True, **extra)  # type: ignore[arg-type]


async def test_fetch_follows_a_redirect(server: str) -> None:
    fetched = await sources.fetch(f"{server}/redirect", allowing())
    assert fetched.data == PAGE and fetched.media_type == "text/html"
    assert fetched.url.endswith("/page.html")


async def test_private_addresses_are_refused_by_default(server: str) -> None:
    with pytest.raises(SourceRefusedError, match="non-public address"):
        await sources.fetch(f"{server}/page.html", IngestionSettings())


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x", "not a url"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(SourceRefusedError):
        sources.check_url(url)


async def test_size_limit_errors_and_redirect_loops(server: str) -> None:
    with pytest.raises(SourceRefusedError, match=r"larger than ingestion\.url_max_bytes"):
        await sources.fetch(f"{server}/big", allowing(url_max_bytes=1000))
    with pytest.raises(DocumentLoadError, match="HTTP 404"):
        await sources.fetch(f"{server}/missing", allowing())
    with pytest.raises(DocumentLoadError, match="redirected more than"):
        await sources.fetch(f"{server}/loop", allowing())


async def test_a_slow_server_hits_the_time_limit() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DocumentLoadError, match="did not answer within"):
            await sources.fetch(f"http://127.0.0.1:{port}/", allowing(url_timeout_seconds=0.5))
    finally:
        tcp.close()


async def test_url_and_corrupt_pdf_through_the_pipeline(
    server: str, db_engine: AsyncEngine, tmp_path: Path
) -> None:
    pytest.importorskip("opentier_loader_pdf", reason="needs the built-in PDF loader")
    pytest.importorskip("opentier_loader_html", reason="needs the built-in HTML loader")
    fpdf = pytest.importorskip("fpdf", reason="fpdf2 makes the test PDF")
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, "Slats delay the stall of a swept wing at high angles of attack.")
    good = bytes(pdf.output())
    (tmp_path / "good.pdf").write_bytes(good)
    (tmp_path / "corrupt.pdf").write_bytes(good[: len(good) // 3])  # truncated: no xref, no trailer
    (tmp_path / "notes.txt").write_text("Ailerons roll the aircraft about its longitudinal axis.")
    system = load_plugins(
        selection=PluginSelection(allow=["text", "pdf", "html", "basic-cleaners"]), extra=[("test", plugin())]
    )
    settings = IngestionSettings(
        roots=[tmp_path], allow_private_urls=True, cleaners=["unicode", "whitespace"]
    )
    collections = Collections(db_engine, system.registry, "test-hash")
    ingestion = Ingestion(db_engine, settings, system.registry, collections)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    collection = await collections.create(tenant, "mixed")
    items = [*ingestion.path_items(str(tmp_path), JobOptions()), ItemSpec("url", f"{server}/page.html")]
    await ingestion.start()
    try:
        job = await ingestion.create_job(tenant, collection.id, {}, JobOptions(), items)
        job = await asyncio.wait_for(ingestion.wait(tenant, job.id), 60)
    finally:
        await ingestion.stop()
    assert (job.status, job.counts.created, job.counts.failed) == ("succeeded", 3, 1)
    async with db_engine.connect() as conn:
        rows = {
            r.source: r
            for r in await conn.execute(
                sa.text(
                    "SELECT source, status, error_stage, error_message, chunk_count, title FROM intelligence.documents "
                    "WHERE collection_id = :c"
                ),
                {"c": collection.id},
            )
        }
        page_text = await conn.scalar(
            sa.text(
                "SELECT string_agg(text, ' ') FROM intelligence.chunks WHERE document_id = (SELECT id FROM intelligence.documents WHERE collection_id = :c AND source LIKE 'http%')"
            ),
            {"c": collection.id},
        )
    assert rows["corrupt.pdf"].status == "failed" and rows["corrupt.pdf"].error_stage == "load"
    assert "pdf" in rows["corrupt.pdf"].error_message.lower()
    assert rows["good.pdf"].status == rows["notes.txt"].status == "ready"
    assert rows[f"{server}/page.html"].title == "Flaps"
    assert "Flaps add lift" in page_text and "menu" not in page_text
