"""The ``opentier`` command line: one click group, one module per command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from opentier import __version__
from opentier.config import Settings, load_settings
from opentier.errors import OpenTierError


class CliState:
    """What every command gets: the config file path and the settings, read on first use."""

    def __init__(self, config_file: Path | None) -> None:
        self.config_file = config_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
            logging.basicConfig(
                level=self._settings.log_level,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            # Alembic narrates every step at INFO; OpenTier logs the outcome itself.
            logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
        return self._settings


class OpenTierGroup(click.Group):
    """Turns OpenTier errors into one line on stderr and exit status 2, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OpenTierError as err:
            click.echo(f"error [{err.code}]: {err.message}", err=True)
            sys.exit(2)


@click.group(cls=OpenTierGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="OPENTIER_CONFIG",
    help="Configuration file (default: $OPENTIER_CONFIG, then ./opentier.toml if present).",
)
@click.version_option(__version__, prog_name="opentier")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """OpenTier: chat with your documents, through plugins you choose.

    Settings come from one TOML file plus OPENTIER_* environment variables
    (`__` for nesting, e.g. OPENTIER_DATABASE__URL). See docs/configuration.md.
    """
    ctx.obj = CliState(config_file)


pass_state = click.make_pass_decorator(CliState)


def _register_commands() -> None:
    from opentier.cli import (
        admin_cmd,
        chat_cmd,
        collections_cmd,
        config_cmd,
        conversations_cmd,
        db_cmd,
        documents_cmd,
        eval_cmd,
        gateway_cmd,
        host_cmd,
        ingest_cmd,
        jobs_cmd,
        plugins_cmd,
        remote_cmd,
        search_cmd,
        up_cmd,
    )

    for command in (
        up_cmd.command,
        ingest_cmd.command,
        collections_cmd.command,
        documents_cmd.command,
        jobs_cmd.command,
        search_cmd.command,
        chat_cmd.command,
        conversations_cmd.command,
        eval_cmd.command,
        plugins_cmd.plugins,
        config_cmd.config,
        db_cmd.command,
        host_cmd.command,
        gateway_cmd.command,
        remote_cmd.command,
        admin_cmd.command,
    ):
        main.add_command(command)


_register_commands()
