"""A third-party plugin, pip-installed for real from a temporary folder, shows up and works.

The distribution carries two entry points: one good plugin and one whose import raises, so the same
install also shows that a broken plugin is listed with its error while the others still load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opentier.components import ComponentKind, Loader, Source
from opentier.plugin_manager import PluginSelection, load_plugins

OPENTIER = Path(sys.executable).with_name("opentier")


def write_distribution(root: Path, suffix: str) -> tuple[str, str, str]:
    dist = f"opentier-test-greeter-{suffix}"
    good, broken = f"greeter_{suffix}", f"broken_{suffix}"
    (root / good).mkdir()
    (root / good / "__init__.py").write_text(
        textwrap.dedent(
            f"""
            from opentier import hookimpl
            from opentier.components import Document, Loader

            class GreeterLoader(Loader):
                name = "greeter-{suffix}"
                description = "says hello to each source"
                extensions = frozenset({{".greet"}})

                async def load(self, source):
                    yield Document.from_text("hello " + source.read_bytes().decode(), source=source.uri)

            @hookimpl
            def register_loaders(register):
                register(GreeterLoader())
            """
        )
    )
    (root / f"{broken}.py").write_text("raise RuntimeError('boom: this plugin cannot import')\n")
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "1.2.3"
            dependencies = ["opentier"]

            [project.entry-points.opentier]
            {good} = "{good}"
            {broken} = "{broken}"

            [tool.setuptools]
            packages = ["{good}"]
            py-modules = ["{broken}"]
            """
        )
    )
    return dist, good, broken


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("plugin-src")
    dist, good, broken = write_distribution(root, suffix)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", str(root)],
        check=True,
        capture_output=True,
    )
    try:
        yield dist, good, broken
    finally:
        subprocess.run([*pip, "uninstall", "-y", dist], check=True, capture_output=True)


def cli_plugins(**env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    environ.update(env)
    done = subprocess.run(
        [str(OPENTIER), "plugins", "--json"],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_installed_plugin_is_listed_with_its_component(
    installed_plugin: tuple[str, str, str],
) -> None:
    dist, good, broken = installed_plugin
    report = cli_plugins()
    plugins = {p["name"]: p for p in report["plugins"]}  # type: ignore[attr-defined]
    assert plugins[good]["distribution"] == dist
    assert plugins[good]["version"] == "1.2.3"
    suffix = good.removeprefix("greeter_")
    assert plugins[good]["components"] == [
        {"kind": "loader", "name": f"greeter-{suffix}", "description": "says hello to each source"}
    ]
    # the broken one is reported with its error, and the built-in plugins still load
    failures = {f["name"]: f for f in report["failures"]}  # type: ignore[attr-defined]
    assert "boom: this plugin cannot import" in failures[broken]["error"]
    assert failures[broken]["distribution"] == dist
    assert {"text", "basic-cleaners"} <= set(plugins)


def test_table_output_names_the_plugin_and_the_error(
    installed_plugin: tuple[str, str, str],
) -> None:
    _dist, good, broken = installed_plugin
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENTIER_")}
    environ["COLUMNS"] = "200"
    out = subprocess.run(
        [str(OPENTIER), "plugins"], capture_output=True, text=True, env=environ, check=True
    ).stdout
    assert good in out and broken in out and "boom" in out


async def test_installed_component_is_usable(installed_plugin: tuple[str, str, str]) -> None:
    _dist, good, _broken = installed_plugin
    system = load_plugins(selection=PluginSelection(allow=[good]))
    suffix = good.removeprefix("greeter_")
    loader = system.registry.get_typed(Loader, f"greeter-{suffix}")
    source = Source(uri="world.greet", data=b"world")
    assert loader.accepts(source)
    docs = [doc async for doc in loader.load(source)]
    assert [d.text for d in docs] == ["hello world"]
    assert system.registry.names(ComponentKind.LOADER) == [f"greeter-{suffix}"]


def test_environment_switches_apply_to_the_cli(installed_plugin: tuple[str, str, str]) -> None:
    _dist, good, _broken = installed_plugin
    assert cli_plugins(OPENTIER_DISABLE_PLUGIN_AUTOLOAD="1") == {"plugins": [], "failures": []}
    only = cli_plugins(OPENTIER_LOAD_PLUGINS=good)
    assert [p["name"] for p in only["plugins"]] == [good]  # type: ignore[attr-defined]
    assert only["failures"] == []  # the broken plugin is never imported
