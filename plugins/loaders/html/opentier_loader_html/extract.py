"""An HTML page's main content as blocks, with selectolax (lexbor): no scripts, styles or navigation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

from opentier.components import Block, BlockKind

#: Never content: code, styling, embedded objects, page chrome, forms, hidden parts, permalink marks.
DROPPED = (
    "script, style, noscript, template, svg, canvas, iframe, object, embed, nav, aside, footer, form, "
    "button, select, dialog, [hidden], [aria-hidden=true], [role=navigation], [role=banner], "
    "[role=contentinfo], [role=search], .headerlink"
)
#: A page's header goes too, but a header inside an article or main is the article's own (its h1).
CHROME = "header"
_CONTENT_ROOTS = ("main", "[role=main]")

_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_LISTS = frozenset({"ul", "ol", "menu"})
#: Elements that end the running paragraph (the rest are inline: their text flows on).
_BLOCK_LEVEL = frozenset(
    {
        "address", "article", "blockquote", "body", "caption", "center", "dd", "details", "dialog", "div",
        "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup", "hr", "html",
        "li", "main", "p", "section", "summary", "tbody", "td", "tfoot", "th", "thead", "tr",
    }
)  # fmt: skip
_SKIPPED_NODES = frozenset({"-comment", "-doctype", "head", "title", "meta", "link", "img", "br"})
_SPACE = re.compile(r"[ \t\n\r\f\u00a0]+")
#: Deeper than this, a subtree is read as flat text (no recursion overflow on pathological pages).
MAX_DEPTH = 200


@dataclass(slots=True)
class Page:
    """What a page yields: title, description, language and the main content's blocks."""

    title: str | None
    blocks: list[Block]
    metadata: dict[str, str] = field(default_factory=dict)


def extract(html: str) -> Page:
    tree = LexborHTMLParser(html)
    metadata = _head_metadata(tree)
    title_node, first_h1 = tree.css_first("title"), tree.css_first("h1")
    title = _text_of(title_node) if title_node is not None else ""
    if not title and first_h1 is not None:
        title = _text_of(first_h1)
    for node in tree.css(DROPPED):
        node.decompose()
    for node in tree.css(CHROME):
        if not _inside(node, {"article", "main"}):
            node.decompose()
    root = _content_root(tree)
    blocks: list[Block] = []
    if root is not None:
        _Walker(blocks).block(root)
    return Page(title or None, blocks, metadata)


def _head_metadata(tree: LexborHTMLParser) -> dict[str, str]:
    found: dict[str, str] = {}
    for meta in tree.css("meta"):
        attrs = {key.lower(): (value or "") for key, value in meta.attributes.items()}
        key = (attrs.get("name") or attrs.get("property") or "").lower()
        content = " ".join(attrs.get("content", "").split())
        if not content:
            continue
        if key in {"description", "author", "keywords"}:
            found.setdefault(key, content)
        elif key == "og:description":
            found.setdefault("description", content)
    html = tree.css_first("html")
    lang = html.attributes.get("lang") if html is not None else None
    if lang:
        found["lang"] = lang.strip()
    return found


def _inside(node: LexborNode, tags: set[str]) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in tags:
            return True
        parent = parent.parent
    return False


def _content_root(tree: LexborHTMLParser) -> LexborNode | None:
    """``<main>`` (or ``role=main``) when present, else the only ``<article>``, else the body."""
    for selector in _CONTENT_ROOTS:
        found = tree.css_first(selector)
        if found is not None:
            return found
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0]
    return tree.body or tree.root


def _collapse(text: str) -> str:
    """HTML whitespace rules: runs of spaces and newlines read as one space; ``\\n`` marks a <br>."""
    lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _text_of(node: LexborNode, skip: frozenset[str] = frozenset()) -> str:
    parts: list[str] = []
    _collect(node, parts, skip, 0)
    return _collapse("".join(parts))


def _collect(node: LexborNode, parts: list[str], skip: frozenset[str], depth: int) -> None:
    """Append the text under ``node``; block-level children are set apart by a space."""
    if depth > MAX_DEPTH:
        parts.append(" " + (node.text(deep=True, separator=" ") or "") + " ")
        return
    for child in node.iter(include_text=True):
        tag = child.tag or ""
        if tag == "-text":
            parts.append((child.text_content or "").replace("\n", " "))
        elif tag == "br":
            parts.append("\n")
        elif tag in skip or tag in _SKIPPED_NODES:
            continue
        elif tag in _BLOCK_LEVEL or tag in _HEADINGS or tag in _LISTS or tag in {"pre", "table"}:
            parts.append(" ")
            _collect(child, parts, skip, depth + 1)
            parts.append(" ")
        else:
            _collect(child, parts, skip, depth + 1)


class _Walker:
    """Turns a content subtree into blocks, in document order."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.buffer: list[str] = []

    def flush(self) -> None:
        text = _collapse("".join(self.buffer))
        self.buffer.clear()
        if text:
            self.blocks.append(Block(text))

    def block(self, node: LexborNode, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            self.buffer.append(" " + (node.text(deep=True, separator=" ") or "") + " ")
            return
        for child in node.iter(include_text=True):
            tag = child.tag or ""
            if tag == "-text":
                self.buffer.append((child.text_content or "").replace("\n", " "))
            elif tag == "br":
                self.buffer.append("\n")
            elif tag in _SKIPPED_NODES:
                continue
            elif tag in _HEADINGS:
                self.flush()
                self.add(_text_of(child).replace("\n", " "), "heading", _HEADINGS[tag])
            elif tag in _LISTS:
                self.flush()
                self.add("\n".join(_list_lines(child, 0)), "list")
            elif tag == "dl":
                self.flush()
                self.add("\n".join(_definition_lines(child)), "list")
            elif tag == "pre":
                self.flush()
                self.add(_preformatted(child), "code")
            elif tag == "table":
                self.flush()
                self.add("\n".join(_table_rows(child)), "table")
            elif tag in _BLOCK_LEVEL:
                self.flush()
                self.block(child, depth + 1)
                self.flush()
            else:  # inline element: its words continue the running paragraph
                self.block(child, depth + 1)

    def add(self, text: str, kind: BlockKind, level: int = 0) -> None:
        if text.strip():
            self.blocks.append(Block(text, kind, level))


def _list_lines(node: LexborNode, depth: int) -> list[str]:
    """``- item`` / ``1. item`` lines; nested lists indented by two spaces per level."""
    ordered = node.tag == "ol"
    start = node.attributes.get("start") or "1"
    number = int(start) if start.strip().lstrip("-").isdigit() else 1
    indent = "  " * depth
    lines: list[str] = []
    for item in node.iter():
        if item.tag != "li":
            continue
        text = _text_of(item, skip=_LISTS).replace("\n", " ")
        if text:
            marker = f"{number}." if ordered else "-"
            lines.append(f"{indent}{marker} {text}")
        number += 1
        if depth < MAX_DEPTH:
            for nested in _nested_lists(item, depth):
                lines.extend(_list_lines(nested, depth + 1))
    return lines


def _nested_lists(node: LexborNode, depth: int) -> list[LexborNode]:
    """Lists inside a list item, however deeply wrapped, but not lists inside those lists."""
    found: list[LexborNode] = []
    for child in node.iter():
        if child.tag in _LISTS:
            found.append(child)
        elif depth < MAX_DEPTH:
            found.extend(_nested_lists(child, depth + 1))
    return found


def _definition_lines(node: LexborNode) -> list[str]:
    lines: list[str] = []
    for child in node.iter():
        text = _text_of(child).replace("\n", " ")
        if not text:
            continue
        if child.tag == "dt":
            lines.append(f"- {text}")
        elif child.tag == "dd":
            lines.append(f"  {text}")
    return lines


def _preformatted(node: LexborNode) -> str:
    text = node.text(deep=True, separator="", strip=False) or ""
    return text.strip("\n").rstrip()


def _table_rows(node: LexborNode) -> list[str]:
    """The caption, then one line per row with its cells separated by `` | ``."""
    rows: list[str] = []
    caption = node.css_first("caption")
    if caption is not None and _text_of(caption):
        rows.append(_text_of(caption).replace("\n", " "))
    for row in node.css("tr"):
        cells = [_text_of(cell).replace("\n", " ") for cell in row.iter() if cell.tag in {"td", "th"}]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows
