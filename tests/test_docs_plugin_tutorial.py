"""docs/writing-a-plugin.md, followed literally: its files are written, pip-installed, and listed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from opentier.components import Cleaner, Document
from opentier.plugin_manager import PluginSelection, load_plugins

DOC = Path(__file__).parent.parent / "docs" / "writing-a-plugin.md"
FILE_BLOCK = re.compile(r"^File `([^`]+)`:\n\n```\w+\n(.*?)```", re.M | re.S)


async def test_tutorial_plugin_installs_and_shows_up(tmp_path: Path) -> None:
    files = FILE_BLOCK.findall(DOC.read_text())
    assert [name for name, _ in files] == [
        "opentier-reverse/pyproject.toml",
        "opentier-reverse/opentier_reverse.py",
    ]
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", str(tmp_path / "opentier-reverse")],
        check=True,
        capture_output=True,
    )
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
        out = subprocess.run(
            [str(Path(sys.executable).with_name("opentier")), "plugins", "--json"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        plugins = {p["name"]: p for p in json.loads(out)["plugins"]}
        assert plugins["reverse"]["distribution"] == "opentier-reverse"
        assert [c["name"] for c in plugins["reverse"]["components"]] == ["reverse-lines"]

        system = load_plugins(selection=PluginSelection(allow=["reverse"]))
        cleaner = system.registry.get_typed(Cleaner, "reverse-lines")
        result = await cleaner.clean(Document.from_text("abc\nxyz", source="s"))
        assert isinstance(result, Document) and result.text == "cba\nzyx"
    finally:
        subprocess.run([*pip, "uninstall", "-y", "opentier-reverse"], check=True, capture_output=True)
