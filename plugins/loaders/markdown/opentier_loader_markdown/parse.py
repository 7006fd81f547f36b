"""Markdown text → blocks, with markdown-it-py (CommonMark plus tables, strikethrough, front matter)."""

from __future__ import annotations

from html.parser import HTMLParser

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode
from mdit_py_plugins.front_matter import front_matter_plugin

from opentier.components import Block, BlockKind

# Built once and only read afterwards: parse() keeps its state per call, so threads may share it.
_MARKDOWN = (
    MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).use(front_matter_plugin)
)

_LISTS = frozenset({"bullet_list", "ordered_list"})


def parse(text: str) -> tuple[str | None, list[Block]]:
    """The raw front matter (``None`` when there is none) and the document's blocks, in order."""
    root = SyntaxTreeNode(_MARKDOWN.parse(text))
    front_matter: str | None = None
    blocks: list[Block] = []
    for node in root.children:
        if node.type == "front_matter":
            front_matter = node.content
        else:
            _emit(node, blocks)
    return front_matter, blocks


def _emit(node: SyntaxTreeNode, blocks: list[Block]) -> None:
    kind = node.type
    if kind == "heading":
        text = _inline_text(node).strip()
        if text:
            blocks.append(Block(text, "heading", level=int(node.tag[1:])))
    elif kind == "paragraph":
        _append(blocks, _inline_text(node), "paragraph")
    elif kind in _LISTS:
        _append(blocks, "\n".join(_list_lines(node, depth=0)), "list")
    elif kind in {"fence", "code_block"}:
        _append(blocks, node.content.rstrip("\n"), "code")
    elif kind == "table":
        _append(blocks, "\n".join(_table_rows(node)), "table")
    elif kind == "html_block":
        _append(blocks, _html_text(node.content), "paragraph")
    elif kind == "blockquote":
        for child in node.children:
            _emit(child, blocks)
    # "hr" carries no text.


def _append(blocks: list[Block], text: str, kind: BlockKind) -> None:
    if text.strip():
        blocks.append(Block(text, kind))


def _inline_text(node: SyntaxTreeNode) -> str:
    """Plain text of inline content: emphasis and links keep their words, images their alt text."""
    parts: list[str] = []
    for child in node.children:
        kind = child.type
        if kind in {"text", "code_inline"}:
            parts.append(child.content)
        elif kind in {"softbreak", "hardbreak"}:
            parts.append("\n")
        elif kind == "html_inline":
            continue
        else:  # inline, em, strong, s, link, image: their children hold the words
            parts.append(_inline_text(child))
    return "".join(parts)


def _block_text(node: SyntaxTreeNode) -> str:
    """Text of any block inside a list item (paragraphs, code, quotes, tables)."""
    if node.type in {"paragraph", "heading"}:
        return _inline_text(node)
    if node.type in {"fence", "code_block"}:
        return node.content.rstrip("\n")
    if node.type == "table":
        return "\n".join(_table_rows(node))
    if node.type == "html_block":
        return _html_text(node.content)
    return "\n".join(_block_text(child) for child in node.children)


def _list_lines(node: SyntaxTreeNode, depth: int) -> list[str]:
    """``- item`` / ``3. item`` lines, nested lists indented by two spaces per level."""
    ordered = node.type == "ordered_list"
    start = node.attrs.get("start", 1)
    number = start if ordered and isinstance(start, int) else 1
    indent = "  " * depth
    lines: list[str] = []
    for offset, item in enumerate(node.children):
        marker = f"{number + offset}." if ordered else "-"
        first = True
        for child in item.children:
            if child.type in _LISTS:
                lines.extend(_list_lines(child, depth + 1))
                continue
            for line in _block_text(child).split("\n"):
                lead = f"{marker} " if first else " " * (len(marker) + 1)
                lines.append(f"{indent}{lead}{line}")
                first = False
    return [line.rstrip() for line in lines]


def _table_rows(node: SyntaxTreeNode) -> list[str]:
    """One line per row, cells separated by `` | `` (header row first)."""
    rows: list[str] = []
    for section in node.children:  # thead, tbody
        for row in section.children:
            cells = [_inline_text(cell).strip() for cell in row.children]
            if any(cells):
                rows.append(" | ".join(cells))
    return rows


class _TextOnly(HTMLParser):
    """The words of an HTML fragment embedded in Markdown (no tags, scripts or styles)."""

    _SKIP = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in {"br", "p", "div", "li", "tr"}:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_text(fragment: str) -> str:
    parser = _TextOnly()
    parser.feed(fragment)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)
