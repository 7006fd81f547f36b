"""``opentier config``: inspect the effective configuration."""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import SecretStr

from opentier.cli import CliState, pass_state
from opentier.config import Settings, find_config_file

HIDDEN = "**********"


@click.group()
def config() -> None:
    """Inspect the configuration (file plus OPENTIER_* environment)."""


@config.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["toml", "json"]),
    default="toml",
    show_default=True,
    help="Output format.",
)
@pass_state
def show(state: CliState, fmt: str) -> None:
    """Print the effective configuration, secrets hidden.

    Values come from the config file, overridden by OPENTIER_* environment variables. A secret
    that is set prints as asterisks; a value that is not set prints as a comment.
    """
    settings = state.settings
    data = redacted(settings)
    path = find_config_file(state.config_file)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"# effective configuration; file: {path or '(none)'}")
    click.echo(to_toml(data))


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with every secret that is set replaced by asterisks."""

    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return HIDDEN
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    cleaned: dict[str, Any] = walk(settings.model_dump(mode="python"))
    return cleaned


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the settings' shape (scalars, lists, nested tables)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        nested: list[tuple[str, dict[str, Any]]] = []
        for key, value in table.items():
            if isinstance(value, dict):
                nested.append((f"{name}.{key}", value))
            elif value is None:
                lines.append(f"# {key} is not set")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for sub_name, sub in nested:
            if not sub:
                lines.append(f"# [{sub_name}] is empty")
                continue
            lines.append("")
            lines.append(f"[{sub_name}]")
            for key, value in sub.items():
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))
