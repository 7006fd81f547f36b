"""The web chat page at ``/``: plain HTML, CSS and JavaScript files from ``opentier/gateway/web/``.

No build step: the files are served as they are, each with a strong ``ETag`` (the SHA-256 of its
content) and ``Cache-Control: no-cache``, so browsers keep them and revalidate with one cheap 304. Only
the files present when the app is built are served, by exact name (no path is ever joined). Every answer
of this blueprint carries the page's security headers: a Content Security Policy without inline scripts
or styles, ``nosniff``, no framing, no referrer. The API under ``/v1`` and ``/docs`` are untouched. See
docs/web.md.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from quart import Blueprint, Response, request
from quart_schema import hide

from opentier.errors import NotFoundError

#: The folder of the page's files inside the package.
WEB_PACKAGE = "opentier.gateway"
WEB_FOLDER = "web"
#: The page itself.
INDEX = "index.html"
#: URL prefix of the page's other files (``/web/app.js``).
ASSET_PREFIX = "/web"
#: A Host header that is only a host name or address and a port (anything else would reach the CSP).
_SANE_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page: its bytes, media type and entity tag."""

    body: bytes
    content_type: str
    etag: str


def load_assets(folder: Traversable | None = None) -> dict[str, Asset]:
    """The page's files by name (the top level of ``folder``, hidden files left out)."""
    folder = folder or files(WEB_PACKAGE).joinpath(WEB_FOLDER)
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        if not entry.is_file() or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
        assets[entry.name] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:32])
    return assets


def content_security_policy(host: str | None) -> str:
    """The page's CSP: everything from the gateway itself, WebSockets to it, no inline code, no framing.

    ``connect-src`` names the page's own origin for ``ws:``/``wss:`` too, as browsers before CSP 3 do
    not count WebSockets as ``'self'``; a Host header that is not a plain host is left out of it."""
    connect = "'self'"
    if host and _SANE_HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(response: Response, host: str | None) -> Response:
    """Add the page's security headers to ``response``."""
    response.headers["Content-Security-Policy"] = content_security_policy(host)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
    return response


def _send(asset: Asset) -> Response:
    """``asset``, or 304 when the client's copy (``If-None-Match``) is current."""
    etag = f'"{asset.etag}"'
    matches = request.headers.get("If-None-Match", "")
    current = any(tag.strip().removeprefix("W/") in (etag, "*") for tag in matches.split(",") if tag.strip())
    response = Response(b"" if current else asset.body, status=304 if current else 200)
    response.headers["Content-Type"] = asset.content_type
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    if current:
        # A 304 has no body; Content-Length would otherwise claim the empty one.
        del response.headers["Content-Length"]
    return response


def make_blueprint(assets: dict[str, Asset]) -> Blueprint:
    """The blueprint serving ``assets``: the page at ``/``, the other files under ``/web/``."""
    blueprint = Blueprint("web", __name__)

    @blueprint.get("/")
    @hide
    async def page() -> Response:
        return _send(assets[INDEX])

    @blueprint.get(f"{ASSET_PREFIX}/<string:name>")
    @hide
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None or name == INDEX:
            raise NotFoundError(f"the web page has no file {name!r}")
        return _send(found)

    @blueprint.after_request
    async def _headers(response: Response) -> Response:
        return security_headers(response, request.host)

    return blueprint


def blueprints() -> list[Blueprint]:
    return [make_blueprint(load_assets())]
