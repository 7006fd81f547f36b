"""URL and folder sources against real servers and files: limits, refusals, and a corrupt PDF that
fails alone while the rest of its folder is stored; SSRF (every form of a non-public address, names
that resolve to one, redirects to one) and folder confinement (``..``, symlinks)."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import pytest_asyncio
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


# -- SSRF: every form of a non-public address, on every hop -----------------------------------------

#: Names the fake resolver answers (DNS is outside the project); the rest resolve for real.
FAKE_DNS: dict[str, list[str]] = {
    "public.example": ["93.184.216.34"],
    "intranet.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:192.168.1.1"],
    "zoned.example": ["fe80::1%lo"],
    "shared.example": ["100.64.0.7"],
    # One public and one private answer: an attacker's DNS may hand out either; any private one refuses.
    "split.example": ["93.184.216.34", "127.0.0.1"],
}


@pytest_asyncio.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's event loop resolves the names of :data:`FAKE_DNS` as listed there."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host in FAKE_DNS:
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (address, port, 0, 0) if ":" in address else (address, port),
                )
                for address in FAKE_DNS[host]
            ]
        return list(await real(host, port, *args, **kwargs))

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/",  # and in hex, abbreviated
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
        "http://intranet.example/",
        "http://metadata.example/",
        "http://mapped.example/",
        "http://zoned.example/",
        "http://shared.example/",
        "http://split.example/",
    ],
)
@pytest.mark.usefixtures("fake_dns")
async def test_every_form_of_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(SourceRefusedError, match="non-public address") as refused:
        await sources.fetch(url, IngestionSettings(url_timeout_seconds=5))
    assert refused.value.code == "source_refused"
    assert "ingestion.allow_private_urls" in refused.value.message


class Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy standing in for the internet: ``public.example`` redirects where it is told."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.hostname == "public.example" and parts.path == "/moved":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"INTERNAL {parts.hostname}{parts.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The host's outgoing HTTP goes through :class:`Proxy` (``HTTP_PROXY``), as behind a corporate
    proxy; the host still checks the address of each URL it is sent to."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    address = f"http://127.0.0.1:{httpd.server_address[1]}"
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", address)
    try:
        yield address
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/admin",
        "http://[::ffff:10.0.0.1]/",
        "http://intranet.example/wiki",
        "http://localhost/",
    ],
)
@pytest.mark.usefixtures("fake_dns", "proxy")
async def test_a_redirect_to_a_non_public_address_is_refused_unless_allowed(target: str) -> None:
    url = f"http://public.example/moved?to={quote(target, safe='')}"
    with pytest.raises(SourceRefusedError, match="non-public address"):
        await sources.fetch(url, IngestionSettings(url_timeout_seconds=5))
    # The same redirect is followed when the configuration allows private addresses.
    fetched = await sources.fetch(url, allowing(url_timeout_seconds=5))
    assert fetched.url == target and fetched.data.startswith(b"INTERNAL ")


@pytest.mark.usefixtures("fake_dns", "proxy")
async def test_a_public_url_through_the_proxy_is_fetched() -> None:
    fetched = await sources.fetch("http://public.example/guide.txt", IngestionSettings(url_timeout_seconds=5))
    assert fetched.data == b"INTERNAL public.example/guide.txt"


class Counting(http.server.BaseHTTPRequestHandler):
    """A loopback server that counts the requests that reach it (none should)."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self._answer()

    def _answer(self) -> None:
        body = b"INTERNAL SECRET"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_dns_rebinding_cannot_swap_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker's DNS answers a public address, then 127.0.0.1 to every later lookup (DNS
    rebinding): the host connects only to an address it checked, so the loopback server sees nothing.
    Before the fix the check's lookup got the public address and the HTTP client's own lookup the
    loopback one, and the page was fetched."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    lookups: list[str] = []

    async def rebinding(host: str | bytes, port_: int, *args: Any, **kwargs: Any) -> list[Any]:
        # httpx's own lookups (through anyio) pass the name IDNA-encoded, as bytes.
        if (host.decode() if isinstance(host, bytes) else host) != "rebind.example":
            return list(await real(host, port_, *args, **kwargs))
        address = "93.184.216.34" if not lookups else "127.0.0.1"
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        with pytest.raises((SourceRefusedError, DocumentLoadError)):
            await sources.fetch(
                f"http://rebind.example:{port}/secret", IngestionSettings(url_timeout_seconds=3)
            )
    finally:
        httpd.shutdown()
    assert Counting.hits == 0
    assert "127.0.0.1" in lookups  # the name was looked up again, and that answer was refused


# -- folders: confined to the roots ----------------------------------------------------------------


def test_traversal_and_symlinks_cannot_leave_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "inside.txt").write_text("inside")
    (outside / "secret.txt").write_text("secret")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "secret-link.txt").symlink_to(outside / "secret.txt")
    (root / "sub" / "passwd").symlink_to("/etc/passwd")
    roots = [root]

    for raw in (
        str(root / ".." / "outside"),
        str(root / "sub" / ".." / ".." / "outside" / "secret.txt"),
        f"{root}/../outside",
        str(root / "escape"),  # a symlink to a folder outside
        str(root / "escape" / "secret.txt"),
        str(root / "sub" / "secret-link.txt"),  # a symlink to a file outside
        "/etc/passwd",
        "/",
    ):
        with pytest.raises(SourceRefusedError, match="outside the folders") as refused:
            list(sources.walk(raw, roots))
        assert refused.value.code == "source_refused", raw

    # `..` that stays inside is fine; walking the root skips every link that leads out of it.
    assert [entry.source for entry in sources.walk(str(root / "sub" / ".." / "sub"), roots)] == [
        "sub/inside.txt"
    ]
    assert [entry.source for entry in sources.walk(str(root), roots)] == ["sub/inside.txt"]
    with pytest.raises(SourceRefusedError, match="reads no folders"):
        list(sources.walk(str(root), []))
