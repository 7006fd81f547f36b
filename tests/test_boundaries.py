"""The hard boundary, checked on the source: the gateway never imports intelligence code, the host side
never imports the gateway, and the Python client (which runs on users' machines) imports neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "opentier"

FORBIDDEN = {
    "gateway": ("opentier.engine", "opentier.host", "opentier.db.models.intelligence"),
    "engine": ("opentier.gateway", "opentier.db.models.gateway"),
    "host": ("opentier.gateway", "opentier.db.models.gateway"),
    "client": ("opentier.gateway", "opentier.engine", "opentier.host", "opentier.db"),
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


def test_importing_the_client_loads_no_server_code() -> None:
    """Not even indirectly: a fresh interpreter imports opentier.client and lists what came with it."""
    probe = (
        "import sys, opentier.client, opentier.client.profile; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentier.gateway', 'opentier.engine', "
        "'opentier.host', 'opentier.db', 'opentier.generated', 'grpc', 'sqlalchemy', 'quart'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
