"""The hard boundary, checked on the source: the gateway never imports intelligence code, and the
host side never imports the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "opentier"

FORBIDDEN = {
    "gateway": ("opentier.engine", "opentier.host", "opentier.db.models.intelligence"),
    "engine": ("opentier.gateway", "opentier.db.models.gateway"),
    "host": ("opentier.gateway", "opentier.db.models.gateway"),
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("side", sorted(FORBIDDEN))
def test_side_does_not_cross_the_boundary(side: str) -> None:
    offenders = []
    for path in sorted((PACKAGE / side).rglob("*.py")):
        for module in imported_modules(path):
            if module.startswith(FORBIDDEN[side]):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert offenders == []


def test_the_check_sees_imports() -> None:
    sample = PACKAGE / "host" / "server.py"
    assert "opentier.plugin_manager" in imported_modules(sample)
