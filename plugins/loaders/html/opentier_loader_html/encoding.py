"""Which encoding an HTML page is in: byte-order mark, declared charset, then detection."""

from __future__ import annotations

import codecs

from opentier_loader_text import decode as detect_and_decode
from selectolax.lexbor import LexborHTMLParser

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: How far into the page a <meta charset> is looked for (the HTML standard says 1024 bytes; be lenient).
PRESCAN_BYTES = 4096


def decode_html(data: bytes, media_type: str | None) -> tuple[str, str]:
    """The page's text and the encoding it was read with; never raises on bad bytes."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data.decode(name, errors="replace"), name
    declared = charset_param(media_type) or declared_charset(data[:PRESCAN_BYTES])
    encoding = _usable(declared) if declared else None
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            pass  # the declaration is wrong: detection below does better than replacement characters
    return detect_and_decode(data)


def charset_param(content_type: str | None) -> str | None:
    """``utf-8`` from ``text/html; charset="utf-8"``."""
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("'\"")
    return None


def declared_charset(head: bytes) -> str | None:
    """The charset a ``<meta charset>`` or ``<meta http-equiv=Content-Type>`` declares, if any."""
    # Latin-1 maps every byte to one character, so ASCII markup survives whatever the real encoding.
    tree = LexborHTMLParser(head.decode("latin-1"))
    for meta in tree.css("meta"):
        attrs = {key.lower(): value for key, value in meta.attributes.items()}
        if attrs.get("charset"):
            return attrs["charset"]
        if (attrs.get("http-equiv") or "").lower() == "content-type":
            found = charset_param(attrs.get("content"))
            if found:
                return found
    return None


def _usable(label: str) -> str | None:
    """A Python codec for an HTML charset label, following the browsers' substitutions."""
    try:
        name = codecs.lookup(label.strip()).name
    except LookupError:
        return None
    if name in {"iso8859-1", "ascii"}:
        return "cp1252"  # what every browser decodes pages labelled latin-1 or ascii with
    if name.startswith(("utf-16", "utf-32")):
        return "utf-8"  # without a byte-order mark the label is wrong: the meta tag itself was ASCII
    return name
