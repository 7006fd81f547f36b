"""Where documents come from: folders on the host (confined to configured roots) and URLs.

A folder becomes one work item per file (include/exclude globs, recursive by default). A URL is
fetched when its item is processed: http and https only, within a size and time limit, and never a
loopback, private or link-local address unless the configuration allows it (checked on every
redirect, too, and at connection time on the very address connected to, so that DNS rebinding cannot
swap a checked address for a private one).
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import mimetypes
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # what httpx itself reads; no public name

from opentier.config import IngestionSettings
from opentier.errors import DocumentLoadError, SourceRefusedError

MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file found under a folder source."""

    path: Path
    #: Identity of the document in its collection: the path relative to the root it lies in.
    source: str


def resolve_path(raw: str, roots: Sequence[Path]) -> tuple[Path, Path]:
    """The real path of ``raw`` and the configured root that contains it, or a refusal."""
    if not roots:
        raise SourceRefusedError(
            "this host reads no folders: add the folder to ingestion.roots in the configuration, "
            "or upload the files instead"
        )
    path = Path(raw).expanduser()
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise SourceRefusedError(f"{raw} does not exist on the host") from None
    for root in roots:
        root_real = root.expanduser().resolve()
        if real == root_real or root_real in real.parents:
            return real, root_real
    allowed = ", ".join(str(r) for r in roots)
    raise SourceRefusedError(f"{raw} is outside the folders this host may read ({allowed})")


def walk(
    raw: str,
    roots: Sequence[Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    recursive: bool = True,
) -> Iterator[FileEntry]:
    """The files of a path source, sorted; symlinks leading out of the root are skipped."""
    real, root = resolve_path(raw, roots)
    if real.is_file():
        yield FileEntry(real, _relative(real, root))
        return
    base = real
    for directory, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(directory) / name
            relative = path.relative_to(base).as_posix()
            if include and not any(fnmatch.fnmatch(relative, pattern) for pattern in include):
                continue
            if any(fnmatch.fnmatch(relative, pattern) for pattern in exclude):
                continue
            try:
                target = path.resolve(strict=True)
            except OSError:
                continue
            if not target.is_file() or (target != root and root not in target.parents):
                continue
            yield FileEntry(path, _relative(path, root))


def folder_prefix(raw: str, roots: Sequence[Path]) -> str:
    """The source prefix of every document under a folder source (for delete_missing)."""
    real, root = resolve_path(raw, roots)
    return "" if real == root else real.relative_to(root).as_posix().rstrip("/") + "/"


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else path.name


def guess_media_type(name: str) -> str | None:
    media_type, _encoding = mimetypes.guess_type(name, strict=False)
    return media_type


# -- URLs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    data: bytes
    media_type: str | None


def check_url(url: str) -> str:
    """Refuse what is not an absolute http(s) URL, before any network access."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise SourceRefusedError(f"only http and https URLs can be ingested, not {parts.scheme or url!r}")
    if not parts.hostname:
        raise SourceRefusedError(f"{url!r} has no host")
    return url


async def check_address(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to; SourceRefusedError when one of them is a loopback, private,
    link-local or reserved address (unless ``allow_private``: then nothing is resolved, ``[host]``)."""
    if allow_private:
        return [host]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DocumentLoadError(f"cannot resolve {host}: {err.strerror}") from None
    addresses: list[str] = []
    for info in infos:
        # An IPv6 address may carry its zone ("fe80::1%eth0"), which ipaddress does not read.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not is_public(address):
            raise SourceRefusedError(
                f"{host} resolves to {address}, a non-public address; set "
                f"ingestion.allow_private_urls to ingest from it"
            )
        if str(address) not in addresses:
            addresses.append(str(address))
    return addresses


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to an address it has just checked.

    The name of each new connection is resolved once, every address is checked (:func:`check_address`)
    and the connection is made to one of those addresses, never to a name resolved again: a DNS server
    that answers a public address first and a private one next (DNS rebinding) gets no second look.
    TLS still verifies the certificate against the name (httpcore passes it as the server name)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: httpcore.ConnectError | None = None
        for address in await check_address(host, port, self._allow_private):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as err:
                failure = err
        raise failure or httpcore.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("URL ingestion does not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over :class:`CheckedBackend` (direct connections; a proxy from the
    environment gets httpx's own transport, see :func:`client`)."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__(trust_env=False)
        # httpx builds its pool without a way to pass the backend; the same pool, with ours. The TLS
        # context reads SSL_CERT_FILE / SSL_CERT_DIR as any httpx client's does.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True),
            network_backend=CheckedBackend(allow_private),
        )


def client(settings: IngestionSettings) -> httpx.AsyncClient:
    """The HTTP client of one fetch: direct connections go to checked addresses only; where the
    environment names a proxy (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, less ``NO_PROXY``),
    requests go through it as with any httpx client, and the proxy does the connecting."""
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        pattern: None if proxy is None else httpx.AsyncHTTPTransport(proxy=proxy)
        for pattern, proxy in get_environment_proxies().items()
    }
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=settings.url_timeout_seconds,
        transport=CheckedTransport(settings.allow_private_urls),
        mounts=mounts,
        trust_env=False,
    )


#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and RFC 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is a public unicast address, and so is any IPv4 address it embeds
    (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64): shared (100.64/10), benchmarking and
    other special ranges are not public either (``is_global``)."""
    if (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    ):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in network for network in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return True


async def fetch(url: str, settings: IngestionSettings) -> Fetched:
    """GET ``url`` within the configured limits, following at most five checked redirects."""
    try:
        async with asyncio.timeout(settings.url_timeout_seconds):
            return await _fetch(url, settings)
    except TimeoutError:
        raise DocumentLoadError(f"{url} did not answer within {settings.url_timeout_seconds:g} s") from None


async def _fetch(url: str, settings: IngestionSettings) -> Fetched:
    current = check_url(url)
    async with client(settings) as http:
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            # Checked here for a proxied request too (the proxy resolves the name on its own).
            await check_address(parts.hostname or "", port, settings.allow_private_urls)
            try:
                async with http.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = check_url(urljoin(current, location))
                        continue
                    if response.status_code >= 400:
                        raise DocumentLoadError(f"{current} answered HTTP {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > settings.url_max_bytes:
                        raise SourceRefusedError(_too_big(current, settings.url_max_bytes))
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body.extend(piece)
                        if len(body) > settings.url_max_bytes:
                            raise SourceRefusedError(_too_big(current, settings.url_max_bytes))
                    media_type = response.headers.get("content-type")
                    return Fetched(current, bytes(body), media_type.split(";")[0] if media_type else None)
            except httpx.HTTPError as err:
                raise DocumentLoadError(f"fetching {current} failed: {err}") from None
    raise DocumentLoadError(f"{url} redirected more than {MAX_REDIRECTS} times")


def _too_big(url: str, limit: int) -> str:
    return f"{url} is larger than ingestion.url_max_bytes ({limit} bytes)"
