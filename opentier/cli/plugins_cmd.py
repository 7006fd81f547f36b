"""``opentier plugins``: what is installed, what each plugin registered, and what failed to load."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from opentier.cli import CliState, pass_state
from opentier.plugin_manager import PluginSystem, load_plugins


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def plugins(state: CliState, as_json: bool) -> None:
    """List installed plugins, the components they register, and load errors.

    Plugins are pip-installed distributions with an entry point in the group `opentier`.
    OPENTIER_LOAD_PLUGINS=a,b loads only the named ones; OPENTIER_DISABLE_PLUGIN_AUTOLOAD=1 loads
    none. A plugin that fails to import is listed with its error and the others still load.
    """
    system = load_plugins(state.settings)
    report = plugin_report(system)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console(soft_wrap=True)
    table = Table(title="OpenTier plugins", show_lines=False)
    for column in ("plugin", "distribution", "version"):
        table.add_column(column, no_wrap=True)
    table.add_column("components", overflow="fold")
    for plugin in report["plugins"]:
        components = ", ".join(f"{c['kind']}:{c['name']}" for c in plugin["components"]) or "-"
        table.add_row(plugin["name"], plugin["distribution"] or "-", plugin["version"] or "-", components)
    console.print(table)
    if not report["plugins"]:
        console.print("No plugin loaded.")
    for failure in report["failures"]:
        where = f" ({failure['distribution']} {failure['version']})" if failure["distribution"] else ""
        console.print(f"[red]failed[/red] {failure['name']}{where}: {failure['error']}", markup=True)


def plugin_report(system: PluginSystem) -> dict[str, Any]:
    """Plain-data view of a :class:`PluginSystem`, shared by the table and ``--json``."""
    plugins = []
    for info in sorted(system.loaded, key=lambda p: p.name):
        components = [
            {
                "kind": str(kind),
                "name": name,
                "description": system.registry.get(kind, name).description,
            }
            for kind, name in system.components_of(info.name)
        ]
        plugins.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "components": components,
            }
        )
    failures = [
        {"name": f.name, "distribution": f.distribution, "version": f.version, "error": f.error}
        for f in system.failures
    ]
    return {"plugins": plugins, "failures": failures}
