"""Render the configuration reference of docs/configuration.md from the Settings model.

``python -m opentier.devtools.configdoc`` rewrites the block between the markers in
docs/configuration.md; ``--check`` exits 1 when it is stale (a test runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from opentier.config import Settings, env_name

BEGIN = "<!-- BEGIN GENERATED: python -m opentier.devtools.configdoc -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def render() -> str:
    """The reference: one table per section, one row per key."""
    out: list[str] = []
    _render_model(Settings, "", "top level", out)
    return "\n".join(out).strip() + "\n"


def _render_model(model: type[BaseModel], prefix: str, title: str, out: list[str]) -> None:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        key = prefix + name
        secret = "SecretStr" in repr(annotation)
        default = "(unset)" if secret else _default(field)
        where = f"`{env_name(key)}`" + (" (environment only)" if secret else "")
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | {_type(annotation)} | {default} | {where} | {description} |")
    if rows:
        out.append(f"\n### {title}\n")
        out.append("| key | type | default | environment | meaning |")
        out.append("|---|---|---|---|---|")
        out.extend(rows)
    for name, sub in nested:
        _render_model(sub, f"{prefix}{name}.", f"[{prefix}{name}]", out)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "(unset)"
    return f"`{value}`" if isinstance(value, Path) else f"`{value!r}`"


def _type(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = text.replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    return f"`{text}`".replace("|", "\\|")


def current_block(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is stale")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    fresh = render()
    if args.check:
        if current_block(text) != fresh:
            print(f"{DOC} is stale: run python -m opentier.devtools.configdoc", file=sys.stderr)
            return 1
        return 0
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + fresh + "\n" + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
